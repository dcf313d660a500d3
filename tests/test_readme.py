"""The README's command examples run as written (in a temporary folder), in the order they are shown."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent


def command_lines(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8").split(f"## {section}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_opens_with_the_two_commands():
    head = README.read_text(encoding="utf-8").splitlines()[:8]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("section", ["Commands", "The whole chain"])
def test_readme_command_examples_run(tmp_path, section):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "REASONSEG_CACHE": str(tmp_path / "c")}
    lines = command_lines(section)
    assert len(lines) >= 8
    for line in lines:
        proc = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
