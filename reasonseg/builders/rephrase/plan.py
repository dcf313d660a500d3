"""What a run must ask: one item per sample (its first text, its form, its target's class names), with the
rendered prompt and the cache key. Pure reading: nothing here writes or calls."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ...dataset import list_images, parse_sample, read_manifest, split_dirs
from ...errors import DatasetError
from ...schema import SPLITS
from .cache import cache_key
from .checks import names_class
from .client import RephraseError
from .pricing import estimate_prompt_tokens, estimate_tokens
from .prompts import PromptTemplate

MAX_TEXTS = 5  # LISA's train images hold 1-5 texts; the rephrased set keeps that ceiling
TASKS = ("rephrase", "explain")
EXPLANATORY = Path("explanatory") / "train.json"


@dataclass(frozen=True)
class Item:
    """One request to make (or to find in the cache) for one sample."""

    split: str
    sample_id: str
    image_name: str
    json_path: Path
    query: str  # the sample's first text, as stored
    text: str  # the same with its spacing normalized: what the prompt shows
    is_sentence: bool
    classes: tuple[str, ...]
    messages: list[dict[str, str]] = field(repr=False)
    key: str
    max_tokens: int
    prompt_tokens_estimate: int
    completion_tokens_estimate: int

    @property
    def name(self) -> str:
        return f"{self.split}/{self.sample_id}"


@dataclass
class Plan:
    items: list[Item]
    samples: int
    skipped: dict[str, int]  # reason -> count: "full" (already 5 texts), "no_text", "explained"
    explanatory: list[dict] | None  # the existing explanatory entries (explain task)


def check_split(split: str, task: str, allow_eval_splits: bool) -> list[str]:
    names = split.split("_")
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        raise RephraseError(f"unknown split {unknown[0]!r}", hint="use train (or val/test with --allow-eval-splits)")
    if task == "explain" and names != ["train"]:
        raise RephraseError("--task explain writes explanatory/train.json and runs on --split train only")
    evaluation = [n for n in names if n != "train"]
    if evaluation and not allow_eval_splits:
        raise RephraseError(f"refusing to rephrase the {evaluation[0]} split: its texts are what methods are "
                            "scored on, and published scores would no longer be comparable",
                            hint="pass --allow-eval-splits if you really mean it")
    return names


def form_rules(text: str, is_sentence: bool, classes: tuple[str, ...]) -> tuple[str, str]:
    """The prompt's `form` and `target_rule` lines for one input."""
    if is_sentence:
        form = ("Each rephrasing is one complete sentence or question, as indirect about the target as the "
                "original.")
    else:
        limit = max(8, 2 * len(text.split()))
        form = (f"Each rephrasing is a short noun phrase of at most {limit} words, like the original: not a "
                "question and not a sentence.")
    if is_sentence and classes and not names_class(text, classes):
        rule = ("The original does not say what the target is: never use the words " +
                ", ".join(repr(c) for c in classes) + ".")
    else:
        rule = "Do not name any object that the original does not name."
    return form, rule


def read_explanatory(root: Path) -> list[dict]:
    path = root / EXPLANATORY
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"explanatory file is not valid JSON: {exc}", path=str(path)) from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError("explanatory file must be a list of {image, query, outputs} objects", path=str(path))
    return entries


def sample_classes(manifest: dict | None) -> dict[str, tuple[str, ...]]:
    """`sample_classes` of the manifest: "split/id" -> the target's class names (absent: none known)."""
    raw = (manifest or {}).get("sample_classes")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for name, classes in raw.items():
        if isinstance(classes, str):
            classes = [classes]
        if isinstance(classes, list):
            out[name] = tuple(c for c in classes if isinstance(c, str) and c.strip())
    return out


def build_plan(root: Path, *, task: str, split: str, n: int, model: str, template: PromptTemplate,
               temperature: float, seed: int | None, allow_eval_splits: bool = False,
               limit: int | None = None) -> Plan:
    if task not in TASKS:
        raise RephraseError(f"unknown task {task!r}", hint="use rephrase or explain")
    if not 1 <= n <= MAX_TEXTS - 1:
        raise RephraseError(f"--n must be between 1 and {MAX_TEXTS - 1} (a sample holds at most {MAX_TEXTS} texts)")
    check_split(split, task, allow_eval_splits)
    root = Path(root)
    classes_of = sample_classes(read_manifest(root))
    explanatory = read_explanatory(root) if task == "explain" else None
    explained = {(e.get("image"), e.get("query")) for e in explanatory or []}
    items: list[Item] = []
    skipped = {"full": 0, "no_text": 0, "explained": 0}
    samples = 0
    for name, folder in split_dirs(root, split):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-.jpg images: `reasonseg validate` is where that is reported
            images = list_images(folder)
        for image_path in images:
            if limit is not None and samples >= limit:
                break
            json_path = image_path.with_suffix(".json")
            if not json_path.is_file():
                raise DatasetError("image has no annotation JSON beside it", path=str(image_path),
                                   sample_id=image_path.stem, hint=f"expected {json_path.name}")
            sample = parse_sample(name, image_path, json_path, 0, 0)
            samples += 1
            if not sample.texts or not sample.texts[0].strip():
                skipped["no_text"] += 1
                continue
            text = " ".join(sample.texts[0].split())
            classes = classes_of.get(f"{name}/{sample.id}", ())
            if task == "rephrase":
                if len(sample.texts) >= MAX_TEXTS:
                    skipped["full"] += 1
                    continue
                form, rule = form_rules(text, sample.is_sentence, classes)
                messages = template.render(text=text, n=n, form=form, target_rule=rule)
                text_tokens = estimate_tokens(text)
                max_tokens = min(1024, 32 + n * (2 * text_tokens + 24))
                completion_estimate = 8 + n * (text_tokens + 6)
                request_n = n
            else:
                if (image_path.name, sample.texts[0]) in explained:
                    skipped["explained"] += 1
                    continue
                target = ", ".join(classes) if classes else "(not given: infer it from the instruction)"
                messages = template.render(text=text, target=target)
                max_tokens, completion_estimate, request_n = 300, 60, 1
            key = cache_key(task=task, model=model, prompt_version=template.identity, temperature=temperature,
                            seed=seed, n=request_n, text=text, messages=messages)
            items.append(Item(name, sample.id, image_path.name, json_path, sample.texts[0], text, sample.is_sentence,
                              classes, messages, key, max_tokens, estimate_prompt_tokens(messages),
                              completion_estimate))
    return Plan(items, samples, skipped, explanatory)
