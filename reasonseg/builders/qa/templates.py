"""The reference's question and answer templates, verbatim (docs/protocol.md §4). These strings are data: a change here
changes what the model is trained on, so the tests pin every character.

Template ids in a QA record name a list and an index: `short:0` is SHORT_QUESTIONS[0], `answer:1` is ANSWERS[1],
`long:1`, `explanatory:2`. A VQA turn copied from LLaVA-Instruct has no template (`vqa`), and an explanatory
text-only answer is `outputs`.
"""
from __future__ import annotations

import numpy as np

IMAGE_TOKEN = "<image>"
SEG_TOKEN = "[SEG]"

SHORT_QUESTIONS = (
    "Can you segment the {class_name} in this image?",
    "Please segment the {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS = (
    "{sent} Please respond with segmentation mask.",
    "{sent} Please output segmentation mask.",
)
EXPLANATORY_QUESTIONS = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)
TEMPLATE_LISTS = {"short": SHORT_QUESTIONS, "long": LONG_QUESTIONS, "explanatory": EXPLANATORY_QUESTIONS,
                  "answer": ANSWERS}


def template_text(template_id: str) -> str:
    """The template string behind an id such as `short:2`."""
    name, _, index = template_id.partition(":")
    return TEMPLATE_LISTS[name][int(index)]


def with_image(question: str) -> str:
    return f"{IMAGE_TOKEN}\n{question}"


def short_question(rng: np.random.Generator, class_name: str) -> tuple[str, str]:
    """A short-template question about a class or phrase, lower-cased as the reference does; (text, id)."""
    k = int(rng.integers(len(SHORT_QUESTIONS)))
    return SHORT_QUESTIONS[k].format(class_name=class_name.lower()), f"short:{k}"


def long_question(rng: np.random.Generator, sentence: str) -> tuple[str, str]:
    """A long-template question around a reasoning sentence, kept as written; (text, id)."""
    k = int(rng.integers(len(LONG_QUESTIONS)))
    return LONG_QUESTIONS[k].format(sent=sentence), f"long:{k}"


def seg_answer(rng: np.random.Generator) -> tuple[str, str]:
    k = int(rng.integers(len(ANSWERS)))
    return ANSWERS[k], f"answer:{k}"


def explanatory_question(rng: np.random.Generator) -> tuple[str, str]:
    k = int(rng.integers(len(EXPLANATORY_QUESTIONS)))
    return EXPLANATORY_QUESTIONS[k], f"explanatory:{k}"


def part_phrase(rng: np.random.Generator, obj: str, part: str) -> str:
    """How the reference names a part: `obj part` or `the part of the obj`, each with probability 0.5."""
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"
