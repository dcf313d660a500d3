"""A synthetic ReasonSeg-format release where only the query tells which object is the target.

`write_grounding_release(out, scenes={"train": N, "val": 200})` draws scenes of `OBJECTS_PER_SCENE` objects, each
of a different colour and a different kind, all drawn alike (same palette, same size range, no overlap) on a muted
background, so no object stands out from the others. Every object of a scene is the target of its own sample: a
scene becomes `OBJECTS_PER_SCENE` samples (`<id>.jpg` + `<id>.json`) with the same pixels and different queries
and masks. A model that ignores the query can therefore do no better than pick one of the objects (a third of them
on average), and the saliency or position of an object says nothing about whether it is the target.

Queries are short noun phrases naming the target's colour, kind, or both (`the red star`, `the star`,
`the red one`); `text[0]` (what the lisa protocol scores) always names both. `scenes.json` at the release root lists,
per split, each scene's sample ids in object order, for query-swap measurements (query object k of a scene, see
which object the prediction lands on). The release gets a `manifest.json`; output is byte-identical per seed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from ..outputs import staged_output_dir
from .release import Drawn, background, draw_object, polygon_of

OBJECTS_PER_SCENE = 3
VAL_SCENES = 200
IMAGE_SIDE = 128
# BGR; saturated and far apart, so that each is equally easy to see on the muted backgrounds.
PALETTE = {"red": (30, 30, 220), "green": (40, 180, 40), "blue": (220, 70, 30), "yellow": (30, 220, 240),
           "white": (250, 250, 250), "black": (15, 15, 15)}
KINDS = ("circle", "square", "triangle", "star")
SPLITS = ("train", "val", "test")
SCENES_FILE = "scenes.json"
SQUARE_REACH = 0.95 * 2 ** 0.5 + 0.01
NAME = "reasonseg-grounding"


def _drawn(rng: np.random.Generator, kind: str, colour: str, centre: tuple[float, float], radius: float) -> Drawn:
    # The release drawer knows rectangles (aspect in `wobble`); a square is a rectangle of aspect 1.
    drawn_kind, wobble = ("rectangle", (1.0,)) if kind == "square" else (kind, ())
    return Drawn(drawn_kind, colour, centre, radius, float(rng.uniform(0, 2 * np.pi)), wobble)


def texts_for(rng: np.random.Generator, kind: str, colour: str) -> list[str]:
    """`text[0]` names colour and kind; the others one cue or both, in other words."""
    others = [f"{colour} {kind}", f"the {kind}", f"the {colour} one", f"the {kind} in {colour}"]
    picks = rng.choice(len(others), size=2, replace=False)
    return [f"the {colour} {kind}"] + [others[int(i)] for i in picks]


def _scene(rng: np.random.Generator, side: int) -> tuple[np.ndarray, list[tuple[str, str, np.ndarray]]]:
    """The image and its objects as (kind, colour, outline polygon), every object fully inside the image."""
    colours = [list(PALETTE)[int(i)] for i in rng.choice(len(PALETTE), OBJECTS_PER_SCENE, replace=False)]
    kinds = [KINDS[int(i)] for i in rng.choice(len(KINDS), OBJECTS_PER_SCENE, replace=False)]
    while True:
        radii = rng.uniform(0.11, 0.16, OBJECTS_PER_SCENE) * side
        reach = SQUARE_REACH * radii  # a square's corners reach farthest from its centre
        centres = rng.uniform(reach[:, None], side - reach[:, None], (OBJECTS_PER_SCENE, 2))
        apart = all(np.hypot(*(centres[i] - centres[j])) >= reach[i] + reach[j] + 0.03 * side
                    for i in range(OBJECTS_PER_SCENE) for j in range(i))
        if apart:
            break
    image = background(rng, side, side)
    objects = []
    for kind, colour, centre, radius in zip(kinds, colours, centres, radii, strict=True):
        obj = _drawn(rng, kind, colour, (float(centre[0]), float(centre[1])), float(radius))
        # Draw with this palette (the release's COLOURS names the same colours with other shades for some).
        tinted = np.zeros_like(image)
        draw_object(tinted, Drawn(obj.kind, "white", obj.centre, obj.radius, obj.angle, obj.wobble))
        alpha = tinted[..., :1].astype(np.float32) / 250.0
        image[:] = np.rint(image * (1 - alpha) + np.array(PALETTE[colour], np.float32) * alpha).astype(np.uint8)
        objects.append((kind, colour, polygon_of(obj)))
    return image, objects


def _ids(seed: int, split: str, scene: int) -> list[str]:
    rng = np.random.default_rng([seed, SPLITS.index(split), scene, 7])
    return [rng.bytes(8).hex() for _ in range(OBJECTS_PER_SCENE)]


def _write_tree(root: Path, seed: int, scenes: dict[str, int], side: int) -> dict[str, list[list[str]]]:
    index: dict[str, list[list[str]]] = {}
    for split, n in scenes.items():
        folder = root / split
        folder.mkdir()
        index[split] = []
        for scene in range(n):
            rng = np.random.default_rng([seed, SPLITS.index(split), scene, 1])
            image, objects = _scene(rng, side)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise OSError(f"OpenCV could not encode a {split} image")
            ids = _ids(seed, split, scene)
            for name, (kind, colour, outline) in zip(ids, objects, strict=True):
                points = [[round(float(x), 2), round(float(y), 2)] for x, y in outline]
                doc = {"text": texts_for(rng, kind, colour), "is_sentence": False,
                       "shapes": [{"label": "target", "points": points, "group_id": None, "shape_type": "polygon",
                                   "flags": {}}],
                       "imagePath": f"{name}.jpg", "imageHeight": side, "imageWidth": side}
                (folder / f"{name}.jpg").write_bytes(jpeg.tobytes())
                (folder / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
            index[split].append(ids)
    return index


def check_scenes(scenes: dict[str, int]) -> dict[str, int]:
    unknown = sorted(set(scenes) - set(SPLITS))
    if unknown:
        raise DatasetError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    for split, n in scenes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DatasetError(f"the number of {split} scenes must be a positive integer, got {n!r}",
                               field="--grounding" if split == "train" else f"--{split}-scenes")
    return {split: scenes[split] for split in SPLITS if split in scenes}


def write_grounding(out: str | os.PathLike, train_scenes: int, val_scenes: int = VAL_SCENES, *,
                    seed: int = 0) -> Path:
    """`reasonseg sample --grounding N`: the grounding release at `out/release`, `out` new or empty."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError("output folder exists and is not empty", path=str(out), hint="choose a new --out")
    return write_grounding_release(out / "release", {"train": train_scenes, "val": val_scenes}, seed=seed)


def write_grounding_release(out: str | os.PathLike, scenes: dict[str, int], *, seed: int = 0,
                            side: int = IMAGE_SIDE) -> Path:
    """Write the release (train/val/test as asked, `scenes.json`, `manifest.json`) to the new folder `out`.

    `scenes` maps split -> number of scenes (each gives `OBJECTS_PER_SCENE` samples). Nothing is left behind on
    failure; raises `DatasetError` if `out` exists and is not empty."""
    from ..dataset import write_manifest

    scenes = check_scenes(scenes)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DatasetError(f"the seed must be a non-negative integer, got {seed!r}", field="--seed")
    with staged_output_dir(out, overwrite=False, outputs=(), error=DatasetError) as tmp:
        index = _write_tree(tmp, seed, scenes, side)
        (tmp / SCENES_FILE).write_text(json.dumps(index, indent=0) + "\n", encoding="utf-8")
        write_manifest(tmp, name=NAME, version="1", sources={"synthetic": f"reasonseg.sample.grounding, seed {seed}"})
    return Path(out)


def read_scenes(root: str | os.PathLike, split: str) -> list[list[str]]:
    """The sample ids of each scene of a split, in object order."""
    path = Path(root) / SCENES_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the scene index ({exc})", path=str(path),
                           hint="write the release with `reasonseg sample --grounding N`") from None
    if split not in index:
        raise DatasetError(f"no split {split!r} in the scene index", path=str(path))
    return index[split]
