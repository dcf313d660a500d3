"""`reasonseg sample --grounding N`: a release where only the query tells which of a scene's alike objects is meant."""
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from reasonseg.dataset import load_split
from reasonseg.masks import rasterize_shapes
from reasonseg.sample.grounding import KINDS, OBJECTS_PER_SCENE, PALETTE, VAL_SCENES, read_scenes
from reasonseg.schema import TARGET

CLI = str(Path(sys.executable).parent / "reasonseg")
ROOT = Path(tempfile.mkdtemp(prefix="grounding-tests-"))


def _sample(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "sample", "--out", str(out), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@functools.cache
def _release() -> Path:
    done = _sample(ROOT / "default", "--grounding", "20")
    assert done.returncode == 0, done.stderr
    return ROOT / "default" / "release"


def _target(sample) -> np.ndarray:
    return rasterize_shapes(sample.shapes, sample.height, sample.width) == TARGET


def test_default_val_has_200_scenes_of_three_queries_each():
    release = _release()
    val = load_split(release, "val")
    assert len(read_scenes(release, "val")) == VAL_SCENES >= 200
    assert len(val) == VAL_SCENES * OBJECTS_PER_SCENE
    assert len(load_split(release, "train")) == 20 * OBJECTS_PER_SCENE
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["splits"]["val"]["count"] == len(val)


def test_each_object_of_a_scene_is_one_querys_target_on_the_same_pixels():
    release = _release()
    samples = {s.id: s for s in load_split(release, "val")}
    for scene in read_scenes(release, "val")[:40]:
        images = [(release / "val" / f"{i}.jpg").read_bytes() for i in scene]
        assert all(image == images[0] for image in images)          # one picture ...
        masks = [_target(samples[i]) for i in scene]
        assert all(m.sum() > 0.01 * m.size for m in masks)
        for a in range(len(masks)):                                  # ... different, disjoint targets
            for b in range(a):
                assert not (masks[a] & masks[b]).any()
        assert len({samples[i].texts[0] for i in scene}) == OBJECTS_PER_SCENE


def test_the_query_names_the_colour_and_kind_of_its_target_and_of_no_other_object():
    release = _release()
    samples = {s.id: s for s in load_split(release, "val")}
    checked = 0
    for scene in read_scenes(release, "val")[:40]:
        image = cv2.imread(str(release / "val" / f"{scene[0]}.jpg")).astype(np.float32)
        names = []
        for i in scene:
            colour, kind = re.fullmatch(r"the (\w+) (\w+)", samples[i].texts[0]).groups()
            assert kind in KINDS
            inner = cv2.erode(_target(samples[i]).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            mean = image[inner].mean(axis=0)
            nearest = min(PALETTE, key=lambda name: np.abs(mean - np.array(PALETTE[name])).sum())
            assert nearest == colour, (i, mean, colour)              # the pixels under the mask have that colour
            names.append((colour, kind))
            checked += 1
        assert len({c for c, _ in names}) == len({k for _, k in names}) == OBJECTS_PER_SCENE
    assert checked == 120


def test_objects_are_alike_so_saliency_and_position_do_not_tell_the_target():
    # Per object: its contrast with the image's median colour, and its distance to the centre. The queried object
    # is the most contrasted (or the most central) one about a third of the time: no shortcut beats chance.
    release = _release()
    samples = {s.id: s for s in load_split(release, "val")}
    most_salient_rank = []
    areas = {0: [], 1: [], 2: []}
    for scene in read_scenes(release, "val"):
        image = cv2.imread(str(release / "val" / f"{scene[0]}.jpg")).astype(np.float32)
        background = np.median(image.reshape(-1, 3), axis=0)
        masks = [_target(samples[i]) for i in scene]
        contrast = [np.abs(image[m].mean(axis=0) - background).sum() for m in masks]
        most_salient_rank.append(int(np.argmax(contrast)))
        for k, m in enumerate(masks):
            areas[k].append(m.sum())
    counts = np.bincount(most_salient_rank, minlength=3) / len(most_salient_rank)
    assert counts.max() < 0.45 and counts.min() > 0.22     # the salient object sits at any object index
    means = [np.mean(a) for a in areas.values()]
    assert max(means) / min(means) < 1.2                   # no object index is systematically larger


def test_same_seed_same_bytes_other_seed_other_scenes():
    a, b, c = ROOT / "seed-a", ROOT / "seed-b", ROOT / "seed-c"
    for out, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert _sample(out, "--grounding", "2", "--val-scenes", "2", "--seed", seed).returncode == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "release" / "manifest.json").read_text() != (c / "release" / "manifest.json").read_text()


def test_bad_sizes_and_a_used_folder_are_one_line_errors_and_write_nothing():
    for args, field in ((["--grounding", "0"], "--grounding"), (["--grounding", "-3"], "--grounding"),
                        (["--grounding", "2", "--val-scenes", "0"], "--val-scenes")):
        out = ROOT / f"bad{args[1]}{args[-1]}"
        done = _sample(out, *args)
        assert done.returncode == 2 and field in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not out.exists()
    used = ROOT / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    done = _sample(used, "--grounding", "2")
    assert done.returncode == 2 and "not empty" in done.stderr
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
