"""The copy-paste blocks of README.md and docs/*.md run as written.

Every ```bash and ```python fence of a page is a block. The blocks of one page run in the order shown, in one
temporary folder, as a reader would paste them: bash blocks each in `bash -e -o pipefail`, python blocks in one
interpreter whose names carry from block to block (a later block may use an earlier one's `reasonseg` or `ev`). The
folder holds `ReasonSeg/`, a copy of the synthetic release `reasonseg sample` writes, where the docs name the real
one, and `reasonseg/` (a link to the package's folder) as in a clone. A block that cannot run here (a GPU, a
released checkpoint, the network, a server that runs until stopped) is marked in the page by
`<!-- not-run: the reason -->` on the line before its fence; nothing else is skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->\s*$")
RUNNABLE = ("bash", "python")


@dataclass(frozen=True)
class Block:
    page: str
    line: int                 # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None       # the reason given in the page, or None


def page_blocks(path: Path) -> list[Block]:
    """The page's bash and python fences, each with the not-run reason written on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, start, lang = [], None, ""
    for n, line in enumerate(lines):
        match = FENCE.match(line)
        if start is None and match and match.group(1):
            start, lang = n, match.group(1)
        elif start is None and line.startswith("```"):
            start, lang = n, ""
        elif start is not None and line.startswith("```"):
            if lang in RUNNABLE:
                before = lines[start - 1] if start else ""
                reason = NOT_RUN.match(before)
                blocks.append(Block(path.name, start + 1, lang, "\n".join(lines[start + 1:n]) + "\n",
                                    reason.group(1) if reason else None))
            start = None
    assert start is None, f"{path.name}:{start + 1}: a fence is never closed"
    return blocks


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_not_run_marker_gives_a_reason_and_sits_on_a_fence():
    for path in PAGES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if "not-run" in line:
                match = NOT_RUN.match(line)
                assert match and match.group(1), f"{_id(path)}:{n + 1}: write <!-- not-run: the reason -->"
                following = lines[n + 1] if n + 1 < len(lines) else ""
                assert FENCE.match(following) and FENCE.match(following).group(1) in RUNNABLE, (
                    f"{_id(path)}:{n + 1}: a not-run marker goes on the line right before a bash or python fence")


def test_the_extractor_reads_fences_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```bash\necho one\n```\n<!-- not-run: needs a GPU -->\n```python\nimport torch\n```\n"
                    "```json\n{}\n```\n```\nplain\n```\n")
    blocks = page_blocks(page)
    assert [(b.line, b.lang, b.code, b.not_run) for b in blocks] == [
        (2, "bash", "echo one\n", None), (6, "python", "import torch\n", "needs a GPU")]


# The driver runs one page's blocks in order in a fresh interpreter (the python blocks share its namespace) and
# says which block failed.
DRIVER = r'''
import json, os, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for block in blocks:
    where = f"{block['page']}:{block['line']}"
    print(f"--- {where} ({block['lang']})", flush=True)
    if block["lang"] == "bash":
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]])
        if done.returncode:
            print(f"FAILED {where}: bash exited {done.returncode}", flush=True)
            sys.exit(1)
        continue
    try:
        exec(compile(block["code"], where, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED {where}", flush=True)
        sys.exit(1)
'''


@pytest.fixture(scope="module")
def sample_release(tmp_path_factory) -> Path:
    from reasonseg.sample import write_sample_release

    return write_sample_release(tmp_path_factory.mktemp("docs-sample") / "release")


PAGES_TO_RUN = [path for path in PAGES if any(b.not_run is None for b in page_blocks(path))]


LAUNCHER_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


@pytest.mark.parametrize("path", PAGES_TO_RUN, ids=_id)
def test_page_blocks_run_as_written(path, tmp_path, sample_release):
    blocks = [b for b in page_blocks(path) if b.not_run is None]
    work = tmp_path / "work"
    shutil.copytree(sample_release, work / "ReasonSeg")
    (work / "reasonseg").symlink_to(ROOT / "reasonseg")      # paths such as reasonseg/lisa/configs/tiny.yaml
    plan = tmp_path / "blocks.json"
    plan.write_text(json.dumps([b.__dict__ for b in blocks]), encoding="utf-8")
    # A reader's fresh shell: no launcher variables (RANK, MASTER_PORT, ...) from whatever ran pytest, or a block
    # that starts torch.distributed (lmms-eval's Accelerator) would join a job that is not there, on a taken port.
    inherited = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env = {**inherited, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "REASONSEG_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(plan)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode:
        failed = [line for line in done.stdout.splitlines() if line.startswith(("--- ", "FAILED"))][-2:]
        pytest.fail("\n".join([*failed, done.stderr[-4000:]]), pytrace=False)
