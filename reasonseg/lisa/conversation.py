"""The original's conversation templates (`llava_v1`, `llava_llama_2`), question/answer templates of
docs/protocol.md §4, and token ids with `<image>`, built exactly as the original built them.

Token ids follow LLaVA's `tokenizer_image_token`: the prompt is split on `<image>`, each piece tokenized (each with
its `<s>`, which is dropped from every piece but the first), and the placeholder `IMAGE_TOKEN_INDEX` (-200) put
between them; the model later replaces it with one embedding per image patch. Training labels follow the original's
collate function: its round-length arithmetic over the rendered text (split into rounds at `</s>`, each round at
the assistant separator, instruction length = tokens of the instruction part minus 2), including its quirks, so the
label mask covers exactly the tokens the original trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ReasonSegError
from .config import IMAGE_TOKEN_INDEX

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.")
LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                  "that the user provides, and assist the user with a variety of tasks using natural language.")
ROLES = ("USER", "ASSISTANT")
EOS = "</s>"
IMAGE = "<image>"
IM_START, IM_END = "<im_start>", "<im_end>"
SEG = "[SEG]"
IGNORE_INDEX = -100
LLAVA_V1, LLAVA_LLAMA_2 = "llava_v1", "llava_llama_2"
TEMPLATES = (LLAVA_V1, LLAVA_LLAMA_2)
# Where the original's label arithmetic splits a round into instruction and answer.
_ANSWER_SEPARATOR = {LLAVA_V1: f" {ROLES[1]}: ", LLAVA_LLAMA_2: "[/INST] "}

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
VALIDATION_ANSWER = "[SEG]."


class ConversationError(ReasonSegError):
    """A conversation the original's label arithmetic cannot split (its collate function asserts on it)."""


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise ConversationError(f"unknown conversation template {template!r}", field="conv_type",
                                hint="one of: " + ", ".join(TEMPLATES))
    return template


def validation_question(text: str, is_sentence: bool) -> str:
    """The original's validation prompt: the text `.strip()`ed, a space after the newline, short texts keep
    their case."""
    text = text.strip()
    reserved = [t for t in (IMAGE, IM_START, IM_END, SEG, EOS) if t in text]
    if reserved:
        raise ConversationError(f"the query text holds {reserved[0]!r}, one of LISA's control tokens (it would add an "
                                "image placeholder, a mask or an end of turn)", field="text",
                                hint="remove it from the text")
    if is_sentence:
        return IMAGE + "\n" + f" {text} Please output segmentation mask."
    return IMAGE + "\n" + f" What is {text} in this image? Please output segmentation mask."


def render(turns: list[tuple[str, str | None]], use_im_start_end: bool = True, template: str = LLAVA_V1
           ) -> tuple[str, list[tuple[int, int]]]:
    """The original's `conv.get_prompt()` for (question, answer) turns; a final answer of None (or "") leaves the
    assistant's turn open for generation. Returns the prompt and the character span of each answer (from the
    separator before it through its `</s>`).

    llava_v1: `{system} USER: {q} ASSISTANT: {a}</s>USER: ... ASSISTANT:`.
    llava_llama_2: `[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{q} [/INST] {a} </s><s>[INST] ... [/INST]`.
    """
    check_template(template)
    text = SYSTEM + " " if template == LLAVA_V1 else ""
    spans = []
    for k, (question, answer) in enumerate(turns):
        if use_im_start_end:
            question = question.replace(IMAGE, IM_START + IMAGE + IM_END)
        if template == LLAVA_V1:
            text += f"{ROLES[0]}: {question} {ROLES[1]}:"
        else:
            if k == 0:
                question = f"<<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n" + question
            text += ("<s>" if k else "") + f"[INST] {question} [/INST]"
        if not answer:
            break
        start = len(text)
        text += (" " + answer + EOS) if template == LLAVA_V1 else (" " + answer + " " + EOS)
        spans.append((start, len(text)))
    return text, spans


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def image_token_ids(tokenizer, text: str) -> list[int]:
    """LLaVA's `tokenizer_image_token`: each `<image>`-separated piece tokenized with `<s>`, which only the first
    piece keeps; `IMAGE_TOKEN_INDEX` between the pieces."""
    chunks = [tokenizer.encode(chunk) for chunk in text.split(IMAGE)]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = [tokenizer.bos_token_id] if offset else []
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def training_labels(tokenizer, text: str, input_ids: list[int], template: str = LLAVA_V1) -> list[int]:
    """The labels the original's collate function gives `input_ids` (the ids of `text`): `IGNORE_INDEX` over `<s>`
    and each round's instruction, where a round is the text between `</s>`s and its instruction is everything up
    to and including the assistant separator, counted as its token length minus 2 (its `<s>` and the `▁` of the
    separator's trailing space)."""
    separator = _ANSWER_SEPARATOR[check_template(template)]
    has_image = IMAGE in text

    def length(part: str) -> int:
        return len(image_token_ids(tokenizer, part)) if has_image else len(tokenizer.encode(part))

    target = list(input_ids)
    cursor = 1
    target[:cursor] = [IGNORE_INDEX] * min(cursor, len(target))
    for round_text in text.split(EOS):
        if round_text == "":
            break
        parts = round_text.split(separator)
        if len(parts) != 2:
            raise ConversationError(f"a round of the conversation holds {len(parts) - 1} assistant separators "
                                    f"{separator!r} (the original's label arithmetic needs exactly one)",
                                    hint="a question or answer must not itself contain the separator")
        round_len = length(round_text)
        instruction_len = length(parts[0] + separator) - 2
        end = min(cursor + instruction_len, len(target))
        target[cursor:end] = [IGNORE_INDEX] * max(0, end - cursor)
        cursor += round_len
    target[cursor:] = [IGNORE_INDEX] * max(0, len(target) - cursor)
    total = sum(1 for i in input_ids if i != tokenizer.pad_token_id)
    if cursor < tokenizer.model_max_length and cursor != total:
        raise ConversationError(f"the rounds count {cursor} tokens but the conversation has {total} (the original "
                                "asserts on this mismatch)", hint="check the texts for `<unk>` or stray `</s>`")
    return target


def tokenize(tokenizer, text: str, with_labels: bool = False, template: str = LLAVA_V1) -> Tokenized:
    """Token ids of a rendered conversation (`IMAGE_TOKEN_INDEX` for each `<image>`) and, `with_labels`, the
    original's training labels (else all `IGNORE_INDEX`)."""
    ids = image_token_ids(tokenizer, text)
    labels = training_labels(tokenizer, text, ids, template) if with_labels else [IGNORE_INDEX] * len(ids)
    return Tokenized(ids, labels)


def seg_token_id(tokenizer) -> int:
    """The id of `[SEG]`, as the original reads it: the first id of tokenizing `[SEG]` without `<s>`."""
    return tokenizer.encode(SEG, add_special_tokens=False)[0]
