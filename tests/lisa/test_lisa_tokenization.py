"""Tokenization pinned beyond the golden fixture, on the fixture's own tokenizer (written by transformers 4.31).

transformers 4.31's slow LlamaTokenizer, which the original used, (1) cut the text at added and special tokens,
(2) stripped the whitespace next to `[SEG]`, `<im_start>`, `<im_end>` (not next to `<s>`, `</s>`), (3) encoded each
remaining piece with SentencePiece on its own (each with its dummy-prefix `▁`); LLaVA's `tokenizer_image_token`
tokenized the `<image>`-separated chunks separately and dropped each later chunk's `<s>`. The expected ids below are
written in those terms, piece by piece, straight on the SentencePiece model (`sp`), with whether the original's
training labels keep each piece: they keep exactly the assistant's answers and their `</s>`.
"""
import sys
from pathlib import Path

import pytest

from reasonseg.lisa.config import IMAGE_TOKEN_INDEX
from reasonseg.lisa.conversation import (
    IGNORE_INDEX,
    LLAMA_2_SYSTEM,
    SYSTEM,
    ConversationError,
    render,
    seg_token_id,
    tokenize,
    validation_question,
)
from reasonseg.lisa.tokenizer import LisaTokenizer, TokenizerError

CKPT = Path(__file__).parent / "fixtures" / "lisa-reference-tiny" / "ckpt"
SEG, IM_START, IM_END, BOS, EOS = 600, 601, 602, 1, 2


@pytest.fixture(scope="module")
def tok():
    return LisaTokenizer.from_pretrained(CKPT)


def sp(tok, text):
    return tok.sp.encode(text)


def expected(parts):
    """(ids, labels) from (ids, kept-as-label) parts."""
    ids = [i for part, _ in parts for i in part]
    labels = [i if kept else IGNORE_INDEX for part, kept in parts for i in part]
    return ids, labels


def check(tok, turns, parts, template="llava_v1"):
    text, spans = render(turns, template=template)
    out = tokenize(tok, text, with_labels=True, template=template)
    ids, labels = expected(parts)
    assert out.input_ids == ids
    assert out.labels == labels
    # The labelled tokens decode to the answers, each closed by </s> (4.31's decode spaces around added tokens).
    answers = [text[a:b].strip() for a, b in spans]
    kept = [t for t in out.labels if t != IGNORE_INDEX]
    assert tok.decode(kept).replace(" ", "") == "".join(answers).replace(" ", "")
    return out


def test_added_tokens_and_ids(tok):
    assert len(tok) == 603 and tok.added == {"[SEG]": SEG, "<im_start>": IM_START, "<im_end>": IM_END}
    assert seg_token_id(tok) == SEG and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, 0)
    # no `▁` before [SEG] (the fast tokenizer of current transformers keeps one), `▁` `.` after it
    assert tok.encode("ASSISTANT: [SEG].</s>", add_special_tokens=False) == (
        sp(tok, "ASSISTANT:") + [SEG] + sp(tok, ".") + [EOS])
    assert tok.encode("USER: <im_start>\n <im_end>\n Hi") == [BOS, *sp(tok, "USER:"), IM_START, IM_END, *sp(tok, "Hi")]
    # </s> and <s> strip nothing: the text after them keeps its own dummy prefix and spaces
    assert tok.encode(" a</s> b", add_special_tokens=False) == sp(tok, " a") + [EOS] + sp(tok, " b")


def test_multi_turn_conversation(tok):
    turns = [("<image>\nWhat is in the picture?", "Sure, [SEG]."), ("And the tree?", "It is [SEG].")]
    check(tok, turns, [
        ([BOS, *sp(tok, SYSTEM + " USER:"), IM_START], False), ([IMAGE_TOKEN_INDEX, IM_END], False),
        (sp(tok, "What is in the picture? ASSISTANT:"), False),
        (sp(tok, "Sure,") + [SEG] + sp(tok, ".") + [EOS], True),
        (sp(tok, "USER: And the tree? ASSISTANT:"), False),
        (sp(tok, "It is") + [SEG] + sp(tok, ".") + [EOS], True)])


def test_several_seg_in_one_answer_and_an_answer_opening_with_seg(tok):
    turns = [("<image>\nSegment the car and the dog.", "The car is [SEG] and the dog is [SEG]."),
             ("Now the sky.", "[SEG].")]
    out = check(tok, turns, [
        ([BOS, *sp(tok, SYSTEM + " USER:"), IM_START], False), ([IMAGE_TOKEN_INDEX, IM_END], False),
        (sp(tok, "Segment the car and the dog. ASSISTANT:"), False),
        (sp(tok, "The car is") + [SEG] + sp(tok, "and the dog is") + [SEG] + sp(tok, ".") + [EOS], True),
        (sp(tok, "USER: Now the sky. ASSISTANT:"), False),
        ([SEG, *sp(tok, "."), EOS], True)])
    assert out.input_ids.count(SEG) == 3


def test_explanatory_answer(tok):
    answer = "Sure, it is [SEG]. The horn grows from the dog's head, which dogs do not have."
    check(tok, [("<image>\nWhat is unusual? Please output segmentation mask and explain why.", answer)], [
        ([BOS, *sp(tok, SYSTEM + " USER:"), IM_START], False), ([IMAGE_TOKEN_INDEX, IM_END], False),
        (sp(tok, "What is unusual? Please output segmentation mask and explain why. ASSISTANT:"), False),
        (sp(tok, "Sure, it is") + [SEG] + sp(tok, ". The horn grows from the dog's head, which dogs do not have.")
         + [EOS], True)])


def test_non_ascii_text_falls_back_to_bytes_and_round_trips(tok):
    question = "<image>\nOù est le café 東京? Please output segmentation mask."
    check(tok, [(question, "C'est [SEG].")], [
        ([BOS, *sp(tok, SYSTEM + " USER:"), IM_START], False), ([IMAGE_TOKEN_INDEX, IM_END], False),
        (sp(tok, "Où est le café 東京? Please output segmentation mask. ASSISTANT:"), False),
        (sp(tok, "C'est") + [SEG] + sp(tok, ".") + [EOS], True)])
    ids = tok.encode("Où est le café 東京?", add_special_tokens=False)
    assert any(tok.sp.id_to_piece(i).startswith("<0x") for i in ids)   # byte fallback
    assert tok.decode(ids) == "Où est le café 東京?"


def test_validation_text_is_stripped_as_the_original_does(tok):
    assert validation_question("  a dog sitting \n", True) == validation_question("a dog sitting", True)
    assert validation_question(" The Cup ", False).endswith("What is The Cup in this image? Please output "
                                                            "segmentation mask.")  # short texts keep their case
    text, _ = render([(validation_question("  a dog  ", True), "[SEG].")])
    ids = tokenize(tok, text).input_ids
    assert ids[ids.index(IM_END) + 1:] == sp(tok, "a dog Please output segmentation mask. ASSISTANT:") + [
        SEG, *sp(tok, "."), EOS]


@pytest.mark.parametrize("hostile", ["a <image> here", "the [SEG] thing", "x</s>USER: y", "<im_start>"])
def test_a_query_holding_control_tokens_is_refused(hostile):
    with pytest.raises(ConversationError, match="control tokens"):
        validation_question(hostile, True)


def test_leading_and_trailing_spaces_around_added_tokens_vanish(tok):
    assert tok.encode("  x  [SEG]  y  ", add_special_tokens=False) == sp(tok, "  x") + [SEG] + sp(tok, "y  ")
    assert tok.encode("[SEG] [SEG]", add_special_tokens=False) == [SEG, SEG]


def test_llava_llama_2_template(tok):
    text, spans = render([("<image>\nWhere is the dog?", "It is [SEG]."), ("And the cat?", None)],
                         template="llava_llama_2")
    assert text == ("[INST] <<SYS>>\n" + LLAMA_2_SYSTEM + "\n<</SYS>>\n\n<im_start><image><im_end>\nWhere is the "
                    "dog? [/INST] It is [SEG]. </s><s>[INST] And the cat? [/INST]")
    assert text[spans[0][0]:spans[0][1]] == " It is [SEG]. </s>"
    closed, _ = render([("<image>\nWhere is the dog?", "It is [SEG].")], template="llava_llama_2")
    check(tok, [("<image>\nWhere is the dog?", "It is [SEG].")], [
        ([BOS, *sp(tok, "[INST] <<SYS>>\n" + LLAMA_2_SYSTEM + "\n<</SYS>>")], False),  # "\n\n" stripped
        ([IM_START, IMAGE_TOKEN_INDEX, IM_END], False),
        (sp(tok, "Where is the dog? [/INST]"), False),
        (sp(tok, "It is") + [SEG] + sp(tok, ". ") + [EOS], True)], template="llava_llama_2")
    assert closed.endswith("[SEG]. </s>")


def test_an_answer_holding_the_separator_fails_as_the_originals_assert_does(tok):
    text, _ = render([("<image>\nq", "It is [SEG]. ASSISTANT: again")])
    with pytest.raises(ConversationError, match="separator"):
        tokenize(tok, text, with_labels=True)
    with pytest.raises(ConversationError, match="template"):
        render([("q", "a")], template="vicuna")


def test_a_llava_tokenizer_gains_lisas_tokens_in_the_originals_order(tok, tmp_path):
    from reasonseg.lisa.tokenizer import add_lisa_tokens

    bare = LisaTokenizer(tok.model_proto)
    assert len(bare) == 600 and add_lisa_tokens(bare) == 3 and add_lisa_tokens(bare) == 0
    assert bare.added == tok.added
    bare.save_pretrained(tmp_path)
    assert LisaTokenizer.from_pretrained(tmp_path).added == tok.added


def test_missing_or_broken_tokenizer_files_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(TokenizerError, match="no tokenizer.model"):
        LisaTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="cannot read tokenizer.model"):
        LisaTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes((CKPT / "tokenizer.model").read_bytes())
    (tmp_path / "added_tokens.json").write_text('{"[SEG]": 700}')
    with pytest.raises(TokenizerError, match="expected 600"):
        LisaTokenizer.from_pretrained(tmp_path)
    (tmp_path / "added_tokens.json").write_text("[not json")
    with pytest.raises(TokenizerError, match="unreadable added tokens"):
        LisaTokenizer.from_pretrained(tmp_path)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(TokenizerError, match="pip install"):
        LisaTokenizer.from_pretrained(CKPT)
