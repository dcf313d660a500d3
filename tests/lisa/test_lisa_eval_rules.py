"""`reasonseg lisa eval --rules`: the model predicts the texts the rules score, and the results are theirs."""
import json
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import release, scratch, tiny_model  # noqa: E402

from reasonseg.cli import app  # noqa: E402
from reasonseg.metrics.report import read_results  # noqa: E402
from reasonseg.metrics.rules import PROFILES  # noqa: E402
from reasonseg.metrics.scoring import evaluate  # noqa: E402
from reasonseg.sources import load_split  # noqa: E402


def test_eval_under_x_sam_rules_predicts_every_text_and_records_the_rules():
    out = scratch("eval-rules") / "out"
    result = CliRunner().invoke(app, ["lisa", "eval", str(release()), "--weights", str(tiny_model("v1")), "--out",
                                      str(out), "--bootstrap", "0", "--rules", "x-sam"], terminal_width=250)
    assert result.exit_code == 0, result.output
    for split in ("val", "test"):
        n_texts = sum(max(len(s.texts), 1) for s in load_split(release(), split))
        preds = json.loads((out / f"{split}.predictions.json").read_text())
        assert len(preds["predictions"]) == n_texts
        doc = read_results(out / f"{split}.results.json")
        assert doc["rules"] == "x-sam" and doc["rule_axes"] == PROFILES["x-sam"].axes()
        again = evaluate(release(), out / f"{split}.predictions.json", split, rules="x-sam", bootstrap=0,
                         cache_dir=None).document
        assert doc["groups"]["overall"] == again["groups"]["overall"]
    assert any("measured: " in line and "[rules x-sam]" in line for line in result.output.splitlines())
