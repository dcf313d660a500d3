"""LISA's tokenizer: LLaMA's SentencePiece model plus `[SEG]`, `<im_start>`, `<im_end>`, tokenized exactly as the
original did (transformers 4.31's slow `LlamaTokenizer`, `use_fast=False`, `legacy=True`).

What that tokenizer did, and what this module reproduces:

- The text is split on the added tokens and on `<s>`, `</s>`, `<unk>` (longest match first). Around the tokens added
  with `add_tokens` (`[SEG]`, `<im_start>`, `<im_end>`) the neighbouring text loses its whitespace on that side
  (`rstrip` on the left, `lstrip` on the right): "ASSISTANT: [SEG]" gives `:` then `[SEG]`, no `▁` between, and
  "<im_end>\\n Something" gives `<im_end>` then `▁Something`. The special tokens `<s>`, `</s>`, `<unk>` were
  `AddedToken(lstrip=False, rstrip=False)` and strip nothing.
- Each remaining piece of text is encoded by SentencePiece on its own (so each gets the dummy-prefix `▁`).
- `add_special_tokens` puts `<s>` in front (no `</s>` at the end).
- Decoding joins the added tokens and the decoded text runs with single spaces ("ASSISTANT: [SEG] </s>").

A current transformers release tokenizes these texts differently (it keeps the spaces, see docs/lisa.md), which is
why the tokenization is done here. `sentencepiece` reads `tokenizer.model`; nothing else is needed to load.
Random-initialised models (`lisa init`) get a small SentencePiece BPE trained offline with LLaMA's settings.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

from ..errors import ReasonSegError
from .conversation import ANSWERS, EXPLANATORY_QUESTIONS, IM_END, IM_START, LONG_QUESTIONS, SEG, SHORT_QUESTIONS, SYSTEM

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL = (BOS, EOS, UNK)
TOKENIZER_MODEL = "tokenizer.model"


class TokenizerError(ReasonSegError):
    """A tokenizer folder cannot be read, or the sentencepiece package is missing."""


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise TokenizerError("reading LLaMA's tokenizer.model needs the sentencepiece package (and protobuf to "
                             "convert it for transformers)",
                             hint="pip install 'reasonseg[model]' (or: pip install sentencepiece protobuf)") from None
    return sentencepiece


class LisaTokenizer:
    """A SentencePiece model with LISA's added tokens, behaving as transformers 4.31's slow `LlamaTokenizer`."""

    def __init__(self, model_proto: bytes, added: dict[str, int] | None = None, model_max_length: int = 512):
        spm = _sentencepiece()
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.model_proto = model_proto
        self.added: dict[str, int] = {}
        self.model_max_length = model_max_length
        self.bos_token_id = self.sp.piece_to_id(BOS)
        self.eos_token_id = self.sp.piece_to_id(EOS)
        self.unk_token_id = self.sp.piece_to_id(UNK)
        self.pad_token_id = self.unk_token_id      # LISA sets pad_token = unk_token
        for token, index in sorted((added or {}).items(), key=lambda kv: kv[1]):
            if index != len(self):
                raise TokenizerError(f"added token {token!r} has id {index}, expected {len(self)} (ids must follow "
                                     "the sentencepiece vocabulary without gaps)")
            self.added[token] = index
        self._compile()

    # ------------------------------------------------------------------ vocabulary
    def __len__(self) -> int:
        return self.sp.get_piece_size() + len(self.added)

    def add_tokens(self, tokens: list[str]) -> int:
        """Append tokens not yet known (as LISA's `tokenizer.add_tokens`); returns how many were new."""
        new = [t for t in tokens if t not in self.added and self.sp.piece_to_id(t) == self.unk_token_id]
        for token in new:
            self.added[token] = len(self)
        self._compile()
        return len(new)

    def token_to_id(self, token: str) -> int:
        return self.added[token] if token in self.added else self.sp.piece_to_id(token)

    def _compile(self) -> None:
        words = sorted([*self.added, *SPECIAL], key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(w) for w in words) + ")")

    # ------------------------------------------------------------------ encoding
    def pieces(self, text: str) -> list[str]:
        """The text cut at the added and special tokens, neighbours of added tokens stripped (4.31's `tokenize`)."""
        parts = self._split.split(text)
        for i, part in enumerate(parts):
            if part in self.added:
                if i + 1 < len(parts) and parts[i + 1]:
                    parts[i + 1] = parts[i + 1].lstrip()
                if i > 0 and parts[i - 1]:
                    parts[i - 1] = parts[i - 1].rstrip()
        return [p for p in parts if p]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens else []
        for piece in self.pieces(text):
            if piece in self.added:
                ids.append(self.added[piece])
            elif piece in SPECIAL:
                ids.append(self.sp.piece_to_id(piece))
            else:
                ids.extend(self.sp.encode(piece))
        return ids

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: list[int]) -> str:
        """4.31's `decode(ids, skip_special_tokens=False)`: text runs and added tokens joined by single spaces."""
        by_id = {v: k for k, v in self.added.items()}
        parts: list[str] = []
        run: list[int] = []
        for index in ids:
            if index in by_id:
                if run:
                    parts.append(self._decode_run(run))
                    run = []
                parts.append(by_id[index])
            else:
                run.append(int(index))
        if run:
            parts.append(self._decode_run(run))
        return " ".join(parts)

    def _decode_run(self, ids: list[int]) -> str:
        # LlamaTokenizer.convert_tokens_to_string: special pieces verbatim, a space before one that follows text.
        special = {self.sp.piece_to_id(s) for s in SPECIAL}
        out, pending, previous_special = "", [], False
        for k, index in enumerate(ids):
            if index in special:
                if not previous_special and k != 0:
                    out += " "
                out += self.sp.decode(pending) + self.sp.id_to_piece(index)
                pending, previous_special = [], True
            else:
                pending.append(index)
                previous_special = False
        return out + self.sp.decode(pending)

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> LisaTokenizer:
        """Read `tokenizer.model` and the added tokens (`added_tokens.json`, or the `added_tokens_decoder` of a
        newer `tokenizer_config.json`)."""
        folder = Path(folder)
        model = folder / TOKENIZER_MODEL
        if not model.is_file():
            raise TokenizerError("no tokenizer.model (LLaMA's SentencePiece model)", path=str(folder),
                                 hint="a LISA or LLaVA folder holds tokenizer.model beside config.json")
        added: dict[str, int] = {}
        added_json = folder / "added_tokens.json"
        config_json = folder / "tokenizer_config.json"
        try:
            if added_json.is_file():
                added = {str(k): int(v) for k, v in json.loads(added_json.read_text(encoding="utf-8")).items()}
            elif config_json.is_file():
                decoder = json.loads(config_json.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
                added = {str(v["content"]): int(k) for k, v in decoder.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TokenizerError(f"unreadable added tokens ({exc})", path=str(folder)) from None
        try:
            proto = model.read_bytes()
            sp_size = cls._piece_count(proto)
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"cannot read tokenizer.model ({exc})", path=str(model)) from None
        return cls(proto, {k: v for k, v in added.items() if v >= sp_size})

    @staticmethod
    def _piece_count(proto: bytes) -> int:
        return _sentencepiece().SentencePieceProcessor(model_proto=proto).get_piece_size()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The files 4.31's `LlamaTokenizer.save_pretrained` wrote, which the original's `AutoTokenizer
        .from_pretrained(..., use_fast=False)` reads back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TOKENIZER_MODEL).write_bytes(self.model_proto)

        def token(content: str) -> dict:
            return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

        config = {"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                  "legacy": True, "model_max_length": self.model_max_length, "pad_token": None,
                  "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
                  **{name: {"__type": "AddedToken", **token(value)}
                     for name, value in (("bos_token", BOS), ("eos_token", EOS), ("unk_token", UNK))}}
        specials = {"bos_token": token(BOS), "eos_token": token(EOS), "pad_token": UNK, "unk_token": token(UNK)}
        files = {"tokenizer_config.json": config, "special_tokens_map.json": specials,
                 "added_tokens.json": dict(sorted(self.added.items(), key=lambda kv: kv[1]))}
        for name, doc in files.items():
            (folder / name).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def add_lisa_tokens(tokenizer: LisaTokenizer) -> int:
    """`[SEG]` then `<im_start>`, `<im_end>`, in the original's order (ids len, len+1, len+2 of a LLaVA tokenizer)."""
    return tokenizer.add_tokens([SEG]) + tokenizer.add_tokens([IM_START, IM_END])


# ---------------------------------------------------------------------------------------------- random models

_WORDS = ("the a an of in on at to is are it this that which what where who can you find please show object "
          "objects image picture photo left right top bottom middle centre center large small big red green blue "
          "yellow orange purple white black grey gray brown pink circle square rectangle triangle star blob shape "
          "thing things one two something someone used for when with near next person people car dog cat table "
          "chair food tree sky water explain because reason why answer question mask segmentation segment")


def _corpus() -> list[str]:
    lines = [SYSTEM, "USER: ASSISTANT:", *SHORT_QUESTIONS, *LONG_QUESTIONS, *EXPLANATORY_QUESTIONS, *ANSWERS,
             _WORDS, _WORDS.title()]
    return lines * 4


def build_tiny_tokenizer(vocab_size: int = 600) -> LisaTokenizer:
    """A small SentencePiece BPE trained offline with LLaMA's settings (byte fallback, dummy prefix, identity
    normaliser, split digits; `<unk>`=0, `<s>`=1, `</s>`=2) plus LISA's tokens: a real LLaMA-layout tokenizer for
    random-initialised models (nothing is downloaded)."""
    spm = _sentencepiece()
    buffer = io.BytesIO()
    spm.set_min_log_level(2)  # the trainer logs every step to stderr otherwise; the library never prints
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buffer, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1)
    tokenizer = LisaTokenizer(buffer.getvalue())
    add_lisa_tokens(tokenizer)
    return tokenizer
