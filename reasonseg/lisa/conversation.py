"""The `llava_v1` chat template, the question/answer templates of protocol.md §4, and tokenization with `<image>`.

Token ids are built the LLaVA way: the prompt is split on `<image>`, each piece tokenized, and the image placeholder
`IMAGE_TOKEN_INDEX` (-200) put between them; the model later replaces it with one embedding per image patch. Labels
keep only the assistant's tokens (found through the fast tokenizer's character offsets, so they are right whatever
the tokenizer does with the space after `ASSISTANT:`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import IMAGE_TOKEN_INDEX

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")
ROLES = ("USER", "ASSISTANT")
EOS = "</s>"
IMAGE = "<image>"
IM_START, IM_END = "<im_start>", "<im_end>"
SEG = "[SEG]"
IGNORE_INDEX = -100

SHORT_QUESTIONS = (
    IMAGE + "\n" + "Can you segment the {class_name} in this image?",
    IMAGE + "\n" + "Please segment the {class_name} in this image.",
    IMAGE + "\n" + "What is {class_name} in this image? Please respond with segmentation mask.",
    IMAGE + "\n" + "What is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS = (
    IMAGE + "\n" + "{sent} Please respond with segmentation mask.",
    IMAGE + "\n" + "{sent} Please output segmentation mask.",
)
EXPLANATORY_QUESTIONS = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWERS = ("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", "[SEG].")


def validation_question(text: str, is_sentence: bool) -> str:
    """The reference's validation prompt (note the space after the newline; short texts keep their case)."""
    if is_sentence:
        return IMAGE + "\n" + f" {text} Please output segmentation mask."
    return IMAGE + "\n" + f" What is {text} in this image? Please output segmentation mask."


def render(turns: list[tuple[str, str | None]], use_im_start_end: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """`{system} USER: {q} ASSISTANT: {a}</s>USER: ...`; a final answer of None leaves `ASSISTANT:` open for
    generation. Returns the prompt and the character spans the assistant is trained to produce (each answer
    with the separator space before it and its `</s>`)."""
    text = SYSTEM + " "
    spans = []
    for question, answer in turns:
        if use_im_start_end:
            question = question.replace(IMAGE, IM_START + IMAGE + IM_END)
        text += f"{ROLES[0]}: {question} {ROLES[1]}:"
        if answer is None:
            break
        start = len(text)
        text += " " + answer + EOS
        spans.append((start, len(text)))
    return text, spans


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def tokenize(tokenizer, text: str, answer_spans: list[tuple[int, int]] = ()) -> Tokenized:
    """Token ids with `IMAGE_TOKEN_INDEX` for each `<image>`, and labels masked to the answer spans."""
    ids: list[int] = []
    labels: list[int] = []
    start = 0
    pieces = text.split(IMAGE)
    for k, piece in enumerate(pieces):
        enc = tokenizer(piece, return_offsets_mapping=True, add_special_tokens=(k == 0))
        for token, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            a, b = a + start, b + start
            inside = b > a and any(a < e and b > s for s, e in answer_spans)
            ids.append(token)
            labels.append(token if inside else IGNORE_INDEX)
        start += len(piece) + len(IMAGE)
        if k < len(pieces) - 1:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
    return Tokenized(ids, labels)


def seg_token_id(tokenizer) -> int:
    """The id of `[SEG]`: the *last* id of tokenizing it (a llama-2 tokenizer puts a `▁` id first; issue #55)."""
    return tokenizer(SEG, add_special_tokens=False)["input_ids"][-1]
