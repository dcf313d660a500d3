"""Option values coerced without pydantic (reasonseg/commands/coercion.py): every value a command receives, and every
error message, is the one typer's own coercion gives; `reasonseg score` imports no pydantic."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from helpers import assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonseg.cli import full_app
from reasonseg.commands.coercion import _UNDECIDED, _plain_value
from reasonseg.commands.common import polish_help
from reasonseg.sample import write_sample_release
from reasonseg.submission import prediction_from_mask, write_predictions

EXE = str(Path(sys.executable).with_name("reasonseg"))

typer_coercion = pytest.importorskip("typer._coercion", reason="this typer coerces with click types, not pydantic")


def _params():
    command = typer.main.get_command(full_app())
    polish_help(command)
    found = []

    def walk(cmd, path):
        for param in [*cmd.params, getattr(cmd, "_help_option", None)]:
            if param is not None and hasattr(param, "type_descriptor"):
                found.append((f"{path} {param.name}", cmd, param))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(command, "reasonseg")
    return found


PARAMS = _params()
RAW = ["0", "1", "7", "-1", "-0", "007", "1_000", " 7", "1e3", "0x10", "1.5", "0.95", "2", "-0.5", ".5", "5.",
       "nan", "inf", "", "lisa", "all-texts", "LISA", "one", "skip", "error", "empty", "bf16", "csv", "markdown",
       "val", "x\0y", "some/path", "١٢", "9" * 30]


def _typer_value(param, ctx, value):
    try:
        return "ok", typer_coercion.build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)
    except Exception as exc:   # noqa: BLE001 - the exception itself is what is compared
        return "error", f"{type(exc).__name__}: {exc}"


def _check_same(name, cmd, param, value):
    ctx = cmd.context_class(cmd)
    plain = _plain_value(value, param, ctx)
    if plain is _UNDECIDED:
        return
    expected = _typer_value(param, ctx, value)
    assert expected == ("ok", plain), (name, value, expected, plain)
    assert type(expected[1]) is type(plain), (name, value)


@pytest.mark.parametrize("name, cmd, param", PARAMS, ids=[p[0] for p in PARAMS])
def test_every_parameter_gets_typers_value_for_every_raw_value(name, cmd, param, tmp_path):
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "path").write_text("x")
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for value in [*RAW, param.default]:
            _check_same(name, cmd, param, value)
    finally:
        os.chdir(cwd)


NUMERIC = [p for p in PARAMS if p[2].type_descriptor.annotation in (int, float)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NUMERIC), st.one_of(st.integers(-10**20, 10**20).map(str),
                                           st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                           st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,20})?", fullmatch=True),
                                           st.text(max_size=8)))
def test_numbers_are_typers_numbers(entry, raw):
    _check_same(*entry, raw)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("coercion") / "release"
    write_sample_release(root, seed=3, counts={"train": 0, "val": 4, "test": 0}, size=(64, 80))
    return root


@pytest.fixture(scope="module")
def predictions(release, tmp_path_factory):
    import numpy as np

    from reasonseg.dataset import load_split

    preds = [prediction_from_mask(s.id, 0, np.ones((s.height, s.width), np.uint8)) for s in load_split(release, "val")]
    path = tmp_path_factory.mktemp("coercion-preds") / "preds.json"
    write_predictions(path, preds, "val", "ones")
    return path


def test_score_receives_the_typed_values_and_imports_no_pydantic(release, predictions, tmp_path):
    code = ("import sys; from reasonseg.cli import main; sys.argv = ['reasonseg'] + sys.argv[1:]\n"
            "try:\n    main()\nfinally:\n    print('PYDANTIC' if 'pydantic' in sys.modules else 'NO-PYDANTIC', "
            "file=sys.stderr)")
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-c", code, "score", str(release), str(predictions), "--bootstrap", "7",
                           "--seed", "3", "--confidence", "0.9", "--protocol", "all-texts", "--missing", "empty",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "NO-PYDANTIC"
    doc = json.loads(out.read_text())
    assert doc["bootstrap"] == {"resamples": 7, "seed": 3, "confidence": 0.9, "unit": "image"}
    assert doc["protocol"] == "all-texts"


@pytest.mark.parametrize("args, expected", [
    (["--bootstrap", "abc"], "Invalid value for '--bootstrap': Input should be a valid integer"),
    (["--bootstrap", "-1"], "Invalid value for '--bootstrap': Input should be greater than or equal to 0"),
    (["--confidence", "2"], "Invalid value for '--confidence': Input should be less than or equal to 1"),
    (["--protocol", "foo"], "Invalid value for '--protocol': Value error, 'foo' is not one of 'lisa', 'all-texts'."),
])
def test_bad_values_get_typers_messages(release, predictions, args, expected):
    proc = subprocess.run([EXE, "score", str(release), str(predictions), *args], capture_output=True, text=True,
                          timeout=300)
    assert_one_line_error(proc, expected)
