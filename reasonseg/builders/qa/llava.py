"""LLaVA-Instruct-150k (docs/formats.md §7): VQA conversations copied as they are, with no mask.

Read: `<root>/llava_instruct_150k.json` (or the JSON file given as the root), a list of
`{"id": str, "image": "<COCO 2017 file name>", "conversations": [{"from": "human"|"gpt", "value": str}, ...]}`.
Images are `<coco>/train2017/<image>`, `<coco>` defaulting to the `coco` folder beside the root.
`<image>` appears once, at the start or at the end of the first human turn; as LLaVA and the reference do, it is
removed and put back at the front as `<image>\n`. Turns must alternate human, gpt, starting with human: an item
that does not is an error (the reference silently drops a leading gpt turn).
"""
from __future__ import annotations

from pathlib import Path

from .cocojson import read_json
from .items import Item, QASourceError, Source, relative_image
from .templates import IMAGE_TOKEN

FILE_NAME = "llava_instruct_150k.json"
ROLES = ("human", "gpt")


def normalise_conversation(turns: object, where: str, path: Path) -> list[dict]:
    """Checked, alternating turns with `<image>` moved to the front of the turn that holds it."""
    if not isinstance(turns, list) or not turns:
        raise QASourceError("'conversations' must be a non-empty list", path=str(path), sample_id=where,
                            field="conversations")
    out = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise QASourceError(f"turn {k} must be an object with a string 'value'", path=str(path),
                                sample_id=where, field=f"conversations[{k}]")
        role = turn.get("from")
        if role != ROLES[k % 2]:
            what = "the first turn" if k == 0 else f"turn {k}"
            raise QASourceError(f"{what} is from {role!r}, expected {ROLES[k % 2]!r} (turns alternate human, gpt, "
                                "starting with human)", path=str(path), sample_id=where,
                                field=f"conversations[{k}].from")
        value = turn["value"]
        if IMAGE_TOKEN in value:
            value = f"{IMAGE_TOKEN}\n" + value.replace(IMAGE_TOKEN, "").strip()
        out.append({"from": role, "value": value})
    if not any(IMAGE_TOKEN in t["value"] for t in out if t["from"] == "human"):
        raise QASourceError("no human turn holds <image>", path=str(path), sample_id=where, field="conversations")
    return out


def open_source(root: Path, image_root: Path | None = None, **_) -> Source:
    path = root if root.is_file() else root / FILE_NAME
    folder = path.parent
    image_root = image_root or folder.parent / "coco"
    items = read_json(path, "LLaVA-Instruct JSON")
    if not isinstance(items, list):
        raise QASourceError("expected a JSON list of conversations", path=str(path))
    keys = [str(k) for k in range(len(items))]

    def load(key: str) -> Item:
        raw, where = items[int(key)], f"llava_instruct/{key}"
        if not isinstance(raw, dict):
            raise QASourceError("item must be an object", path=str(path), sample_id=where)
        image = raw.get("image")
        if not isinstance(image, str) or not image:
            raise QASourceError("item has no 'image' (text-only items are not VQA on an image)", path=str(path),
                                sample_id=where, field="image")
        conversation = normalise_conversation(raw.get("conversations"), where, path)
        rel = relative_image(image_root, image_root / "train2017" / image, key, "llava_instruct")
        return Item(key, rel, conversation=conversation)

    return Source("llava_instruct", "vqa", folder, image_root, lambda: keys, load, {"items": len(keys),
                                                                                  "file": path.name})
