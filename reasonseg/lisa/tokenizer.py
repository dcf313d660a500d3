"""Tokenizers: LISA's added tokens, and a small byte-level BPE tokenizer built offline for random-initialised models.

The released models use the LLaMA sentencepiece tokenizer plus `[SEG]` (an ordinary added token, as the reference
adds it) and `<im_start>`/`<im_end>` (special). A random-initialised model has no LLaMA tokenizer to hand (nothing is
downloaded), so `lisa init` trains a byte-level BPE on the template strings: it encodes any text, round-trips
through `save_pretrained`/`AutoTokenizer`, and adds a BOS like LLaMA's.
"""
from __future__ import annotations

from .conversation import ANSWERS, EXPLANATORY_QUESTIONS, IM_END, IM_START, LONG_QUESTIONS, SEG, SHORT_QUESTIONS, SYSTEM

_WORDS = ("the a an of in on at to is are it this that which what where who can you find please show object "
          "objects image picture photo left right top bottom middle centre center large small big red green blue "
          "yellow orange purple white black grey gray brown pink circle square rectangle triangle star blob shape "
          "thing things one two something someone used for when with near next person people car dog cat table "
          "chair food tree sky water explain because reason why answer question mask segmentation segment")


def _corpus() -> list[str]:
    lines = [SYSTEM, "USER: ASSISTANT:", *SHORT_QUESTIONS, *LONG_QUESTIONS, *EXPLANATORY_QUESTIONS, *ANSWERS,
             _WORDS, _WORDS.title()]
    return lines * 4


def build_byte_bpe_tokenizer(vocab_size: int = 512):
    """A LLaMA-like fast tokenizer (`<unk>`=0, `<s>`=1, `</s>`=2, BOS added, pad = unk) with LISA's tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(), trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<unk>", padding_side="right",
                                        model_max_length=512)
    add_lisa_tokens(tokenizer)
    return tokenizer


def add_lisa_tokens(tokenizer) -> int:
    """Add `[SEG]` (not special, as the reference) and `<im_start>`/`<im_end>` (special); pad with unk, right side.
    Returns how many tokens were new."""
    added = tokenizer.add_tokens([SEG])
    added += tokenizer.add_tokens([IM_START, IM_END], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    return added
