"""The scoring-only install, installed for real: a fresh virtual environment, `pip install <the package>` with its
base dependencies only (from the package index, through pip's usual cache), then the commands a user of that install
runs: scoring and submitting work; every command that needs an extra says which, in one line, exit 2, writing
nothing; help never needs an extra."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (command, what the one-line error names, what must not exist afterwards)
NEEDS_AN_EXTRA = [
    (["predict", "{release}", "--method", "clipseg", "--split", "val", "--out", "clip.json"], "reasonseg[model]",
     "clip.json"),
    (["publish", "{release}", "--out", "hub"], "reasonseg[hub]", "hub"),
    (["build", "qa", "--source", "ade20k={ade20k}", "--out", "qa", "--parquet"], "reasonseg[hub]", "qa"),
    (["lisa", "init", "--out", "tiny"], "reasonseg[model]", "tiny"),
    (["leaderboard", "export", "--db", "lb.db", "--out", "site"], "reasonseg[serve]", "site"),
    (["rephrase", "{release}", "--split", "train"], "reasonseg[llm]", None),
]


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """A virtual environment holding reasonseg and its base dependencies, nothing else."""
    root = tmp_path_factory.mktemp("base-install")
    source = root / "source"  # a copy, so the build writes nothing into the working tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "reasonseg", source / "reasonseg", ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", str(source)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


def _base(venv: Path, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "OPENAI_API_KEY")}
    return subprocess.run([str(venv / "bin" / "reasonseg"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**clean, **(env or {})}, timeout=600)


@pytest.mark.slow
def test_the_base_install_scores_submits_and_names_missing_extras(base_venv, tmp_path):
    check = subprocess.run([str(base_venv / "bin" / "python"), "-c",
                            "import importlib.util as u; print([m for m in ('torch', 'pyarrow', 'sqlalchemy', "
                            "'fastapi', 'openai', 'datasets') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == "[]", check.stdout + check.stderr   # truly the base install

    work = tmp_path / "work"
    work.mkdir()
    assert _base(base_venv, "--version", cwd=work).stdout.startswith("reasonseg ")
    proc = _base(base_venv, "sample", "--out", "s", cwd=work)
    assert proc.returncode == 0, proc.stderr
    release = work / "s" / "release"
    ade20k = next((work / "s" / "qa-sources").glob("*/ade20k"))

    # Scoring works.
    proc = _base(base_venv, "predict", release, "--method", "center-prior", "--split", "val", "--out", "p.json",
                 cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = _base(base_venv, "score", release, "p.json", "--bootstrap", "50", "--out", "r.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "overall" in proc.stdout and (work / "r.json").is_file()

    # Each command that needs an extra: one line naming the pip command, exit 2, nothing written.
    for args, extra, output in NEEDS_AN_EXTRA:
        before = sorted(p.name for p in work.iterdir())
        args = [a.format(release=release, ade20k=ade20k) for a in args]
        proc = _base(base_venv, *args, cwd=work)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert f"pip install '{extra}'" in lines[0], (args, lines[0])
        assert sorted(p.name for p in work.iterdir()) == before, args
        if output:
            assert not (work / output).exists(), args

    # Help never needs an extra; the library's export that needs one says which, as one ReasonSegError line.
    for sub in ("init", "chat", "predict", "train", "export", "eval"):
        proc = _base(base_venv, "lisa", sub, "-h", cwd=work)
        assert proc.returncode == 0 and f"reasonseg lisa {sub}" in proc.stdout, (sub, proc.stdout, proc.stderr)
    proc = subprocess.run([str(base_venv / "bin" / "python"), "-c", "import reasonseg\ntry:\n"
                           "    from reasonseg import LisaPredictor\nexcept reasonseg.ReasonSegError as exc:\n"
                           "    print(type(exc).__name__, exc)"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("MissingExtraError reasonseg.LisaPredictor needs") and \
        "pip install 'reasonseg[model]'" in proc.stdout, proc.stdout

    # Submitting works against a real server (run from the full environment); the method name holds markup.
    sys.path.insert(0, str(REPO / "tests"))
    from leaderboard.lb_helpers import ServerProcess, cli

    db = str(tmp_path / "lb.db")
    token = cli("leaderboard", "add-team", "base team", "--db", db).stdout.strip()
    server = ServerProcess(release, db, tmp_path, "--bootstrap", "50")
    try:
        proc = _base(base_venv, "submit", "p.json", "--server", server.url, "--token", token,
                     "--method", "[/x] prior [b]", cwd=work)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "[/x] prior [b]" in proc.stdout and "overall" in proc.stdout and "/submissions/" in proc.stdout
    assert " · val · " in proc.stdout   # no --split: the predictions file's own split
