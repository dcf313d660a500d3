"""Which form a DATA argument is (`reasonseg.sources`): a mistyped path is reported as a path with a "did you mean",
never taken for a Hub id; and the release reader sits below the adapters that dispatch to it (no import circle)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))
PACKAGE = Path(__file__).resolve().parents[1] / "reasonseg"


def run(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "REASONSEG_CACHE": str(Path(cwd) / "cache")}
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("work")
    write_sample_release(root / "rs" / "release", counts={"train": 1, "val": 2, "test": 2})
    (root / "preds.json").write_text('{"format": "reasonseg-predictions", "version": 1, "split": "val", '
                                     '"predictions": []}')
    return root


@pytest.mark.parametrize("name", ["rs/relase", "./rs/relase", "rs/relase/"])
def test_a_mistyped_path_is_a_path_with_a_did_you_mean(workdir, name):
    for args in (("validate", name), ("score", name, "preds.json", "--split", "val")):
        line = assert_one_line_error(run(*args, cwd=workdir), "release folder not found",
                                     f"did you mean {Path('rs/release')}")
        assert "Hugging Face" not in line and "download" not in line


def test_paths_from_the_parent_and_absolute_paths_are_paths(workdir):
    inner = workdir / "rs"
    line = assert_one_line_error(run("validate", "../rs/relase", cwd=inner), "release folder not found",
                                 "did you mean ../rs/release")
    assert "Hugging Face" not in line
    absolute = assert_one_line_error(run("validate", workdir / "rs" / "relase", cwd=workdir),
                                     "did you mean", str(workdir / "rs" / "release"))
    assert "Hugging Face" not in absolute
    # a path-like name with nothing close: still a path, no download advice
    line = assert_one_line_error(run("validate", "./nothing/here", cwd=workdir), "release folder not found")
    assert "Hugging Face" not in line and "download" not in line


def test_only_an_owner_name_matching_nothing_local_is_a_hub_id(workdir):
    assert_one_line_error(run("validate", "someone/absent", cwd=workdir), "someone/absent",
                          "local Hugging Face cache")
    assert run("validate", "rs/release", cwd=workdir).returncode == 0
    # an owner/name close to a local path: tried on the Hub, and the local near-miss is named too
    assert_one_line_error(run("validate", "rsx/release", cwd=workdir), "local Hugging Face cache",
                          "did you mean rs/release")


def test_the_library_reports_the_same(workdir, monkeypatch):
    from reasonseg import load_split
    from reasonseg.errors import DatasetError

    monkeypatch.chdir(workdir)
    with pytest.raises(DatasetError, match="did you mean rs/release"):
        load_split("rs/relase", "val")
    assert [s.id for s in load_split("rs/release", "val")]


# ------------------------------------------------------------------------------------------------- import layers

def imported_modules(path: Path) -> set[str]:
    """Every reasonseg module a file imports, at the top or inside a function."""
    package = "reasonseg." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rstrip(".").split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name.startswith("reasonseg")}


def test_no_import_circle_between_the_data_source_modules():
    modules = {"reasonseg.dataset": "dataset.py", "reasonseg.published": "published.py",
               "reasonseg.sources": "sources.py", "reasonseg.hub_mirror": "hub_mirror.py",
               "reasonseg.locations": "locations.py", "reasonseg.metrics.groundtruth": "metrics/groundtruth.py",
               "reasonseg.xsam_dump": "xsam_dump.py", "reasonseg.submission": "submission.py",
               "reasonseg.saved_datasets": "saved_datasets.py"}
    edges = {name: imported_modules(PACKAGE / file) & set(modules) for name, file in modules.items()}
    assert not edges["reasonseg.dataset"] & {"reasonseg.published", "reasonseg.sources", "reasonseg.hub_mirror"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    circles = [name for name in modules if reaches(name, name, set())]
    assert not circles, edges
