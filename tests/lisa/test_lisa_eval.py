"""`reasonseg lisa eval`: predict + score val and test, the paper's rows beside, the seen-val warning."""
import json
import shutil
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import release, scratch, tiny_model  # noqa: E402

from reasonseg.cli import app  # noqa: E402
from reasonseg.errors import ReasonSegError  # noqa: E402
from reasonseg.lisa.checkpoint import SEEN_SPLITS_KEY, seen_splits  # noqa: E402
from reasonseg.metrics.report import read_results  # noqa: E402

runner = CliRunner()


def _copy(name: str, **config) -> Path:
    """The tiny model under another folder name, with fields added to its config.json."""
    folder = scratch("eval-models") / name
    shutil.copytree(tiny_model("v1"), folder)
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**doc, **config}))
    return folder


def test_eval_prints_measured_beside_the_paper_and_warns_on_a_v1_checkpoint():
    weights = _copy("LISA-7B-v1")
    out = scratch("eval") / "out"
    result = runner.invoke(app, ["lisa", "eval", str(release()), "--weights", str(weights), "--out", str(out),
                                 "--bootstrap", "50"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "warning: LISA-7B-v1 is known to have been trained on val" in result.output
    assert "reference issue #74" in result.output
    # The paper's rows (size and base of the checkpoint: 7B, LLaVA v1; zero-shot and ft), then the measured one.
    lines = result.output.splitlines()
    paper = next(line for line in lines if "LISA-7B (paper)" in line)
    assert "44.4 / 46.0" in paper and "37.6 / 34.4" in paper and "36.8 / 34.1" in paper
    assert any("LISA-7B (ft) (paper)" in line and "52.9 / 54.0" in line for line in lines)
    assert not any("LLaVA1.5" in line for line in lines)
    # Both splits predicted (every query once) and scored; the printed cells are the results files' numbers.
    for split, n in (("val", 4), ("test", 3)):
        preds = json.loads((out / f"{split}.predictions.json").read_text())
        assert preds["split"] == split and len(preds["predictions"]) == n
        doc = read_results(out / f"{split}.results.json")
        overall = doc["groups"]["overall"]
        assert overall["n"] == n and overall["giou_ci"][0] <= overall["giou"] <= overall["giou_ci"][1]
    val = read_results(out / "val.results.json")["groups"]["overall"]
    measured = next(k for k, line in enumerate(lines) if "measured: LISA-7B-v1" in line)
    assert f"{100 * val['giou']:.1f} / {100 * val['ciou']:.1f}" in lines[measured]
    ci = f"[{100 * val['giou_ci'][0]:.1f}, {100 * val['giou_ci'][1]:.1f}]"
    assert ci in lines[measured + 1]  # the CI line under the measured cells


def test_which_checkpoints_count_as_having_seen_val():
    plain = tiny_model("v1")
    assert seen_splits(plain) == (set(), None)
    for name in ("LISA-13B-llama2-v1-explanatory", "LISA-7B-v1-explanatory"):
        seen, why = seen_splits(_copy(name))
        assert seen == {"train", "val"} and name in why
    # A parent folder's name says nothing about the checkpoint (only its own name, or a hub cache's repository).
    assert seen_splits(_copy("LISA-7B-v1-runs/export"))[0] == set()
    hub = scratch("hub") / "models--xinlai--LISA-13B-llama2-v1" / "snapshots" / "abc123"
    hub.parent.mkdir(parents=True)
    shutil.copytree(plain, hub)
    assert "val" in seen_splits(hub)[0] and "LISA-13B-llama2-v1" in seen_splits(hub)[1]
    assert "val" in seen_splits(_copy("m1", _name_or_path="xinlai/LISA-7B-v1"))[0]
    assert "val" in seen_splits(_copy("m2", **{SEEN_SPLITS_KEY: ["train", "val"]}))[0]
    for name in ("LISA-7B-v1.5", "LISA-7B", "LISA-7B-v10"):
        assert seen_splits(_copy(name))[0] == set(), name
    assert seen_splits(_copy("m3", **{SEEN_SPLITS_KEY: ["train"]}))[0] == {"train"}


def test_eval_without_a_v1_checkpoint_does_not_warn_and_rejects_unknown_rows():
    out = scratch("eval-plain") / "out"
    result = runner.invoke(app, ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1.5")), "--out",
                                 str(out), "--bootstrap", "20", "--paper-row", "LISA-13B-LLaVA1.5 (ft)"],
                           terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "65.0 / 72.9" in result.output
    bad = runner.invoke(app, ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1")), "--paper-row",
                              "LISA-99B", "--out", str(scratch("eval-bad") / "out")])
    assert isinstance(bad.exception, ReasonSegError) and "no paper row 'LISA-99B'" in str(bad.exception)
    # The folder rule: a folder holding this evaluation's files is refused before the model opens; --overwrite
    # replaces this evaluation's files only: another benchmark's results and the user's files stay.
    again = ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1.5")), "--out", str(out),
             "--bootstrap", "0"]
    refused = runner.invoke(app, again)
    assert isinstance(refused.exception, ReasonSegError)
    assert "val.predictions.json" in str(refused.exception) and "--overwrite" in str(refused.exception)
    (out / "notes.txt").write_text("mine")
    (out / "refcoco_val.results.json").write_text("{}")
    before = (out / "val.predictions.json").stat().st_mtime_ns
    replaced = runner.invoke(app, [*again, "--overwrite"], terminal_width=250)
    assert replaced.exit_code == 0, replaced.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "refcoco_val.results.json").read_text() == "{}"
    assert (out / "val.predictions.json").stat().st_mtime_ns != before
    # A folder holding only another benchmark's results takes this evaluation beside them without --overwrite;
    # a folder holding files lisa eval does not write is still refused.
    beside = scratch("eval-beside") / "out"
    beside.mkdir()
    (beside / "refcoco_testA.results.json").write_text("{}")
    done = runner.invoke(app, ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1.5")), "--out",
                               str(beside), "--bootstrap", "0"], terminal_width=250)
    assert done.exit_code == 0, done.output
    assert (beside / "test.results.json").is_file() and (beside / "refcoco_testA.results.json").read_text() == "{}"
    mixed = scratch("eval-mixed")
    (mixed / "refcoco_testA.results.json").write_text("{}")
    (mixed / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1.5")), "--out",
                                  str(mixed), "--bootstrap", "0"])
    assert isinstance(refused.exception, ReasonSegError) and "not empty" in str(refused.exception)


def test_exports_record_the_splits_their_weights_saw():
    from reasonseg.lisa.train import load_config, trained_splits

    tiny = Path(__file__).parents[2] / "reasonseg" / "lisa" / "configs" / "tiny.yaml"

    def config(model, **data):
        return load_config(tiny, {"model": str(model), "data": {"val": None, **data}}, check_data=False)

    assert trained_splits(config(tiny_model("v1"), reasonseg="R")) == {"train"}
    assert trained_splits(config(tiny_model("v1"), reasonseg="R", reasonseg_split="val")) == {"val"}
    # Fine-tuning a released v1 model on train alone still yields weights that saw val.
    assert trained_splits(config(_copy("LISA-7B-v1"), reasonseg="R")) == {"train", "val"}
    assert trained_splits(config(tiny_model("v1"), qa="Q")) == {"train"}
