"""`reasonseg report`: the comparison page over several results files."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from baselines_support import run_cli, small_release

from reasonseg.baselines.oracles import target_and_ignore
from reasonseg.baselines.predict import run_to_file
from reasonseg.baselines.registry import MethodContext, get_method
from reasonseg.dataset import load_split
from reasonseg.metrics.comparison import disagreements, load_entries, significance
from reasonseg.metrics.report import write_results
from reasonseg.metrics.scoring import evaluate
from reasonseg.paper import PAPER_TABLE1


class GroundTruthCopy:
    def predict(self, sample, query):
        return target_and_ignore(sample)[0]


class LeftHalf:
    def predict(self, sample, query):
        mask = np.zeros((sample.height, sample.width), bool)
        mask[:, : sample.width // 2] = True
        return mask


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    release = small_release(root / "release", counts={"train": 3, "val": 6, "test": 8})
    methods = {"full": get_method("full").build(MethodContext(release)), "left-half": LeftHalf(),
               "oracle-box-sam": GroundTruthCopy()}
    paths = []
    for name, method in methods.items():
        for split in ("val", "test"):
            preds = run_to_file(method, load_split(release, split), root / "predictions" / f"{name}-{split}.json",
                                split=split, method_name=name).out
            doc = evaluate(release, preds, split, bootstrap=200, cache_dir=None).document
            paths.append(write_results(root / "results" / f"{name}-{split}.json", doc))
    return release, paths


def test_entries_flag_oracles_and_find_their_predictions(scored):
    release, paths = scored
    entries = load_entries(paths)
    flags = {(e.label, e.split): e.oracle for e in entries}
    assert flags[("oracle-box-sam", "val")] is True and flags[("full", "test")] is False
    assert all(e.predictions is not None and e.predictions.name == e.path.name for e in entries)


def test_significance_is_against_the_best_non_oracle_method(scored):
    _, paths = scored
    rows = significance(load_entries(paths), n_resamples=200)
    assert {r["split"] for r in rows} == {"val", "test"}
    test_rows = [r for r in rows if r["split"] == "test"]
    best = test_rows[0]["best"]
    assert "oracle" not in best and len(test_rows) == 2
    oracle = next(r for r in test_rows if "oracle" in r["method"])
    assert oracle["giou"].delta > 0 and oracle["giou"].ci[0] > 0     # the ground truth beats any method


def test_disagreements_are_sorted_by_the_iou_gap(scored):
    _, paths = scored
    entries = [e for e in load_entries(paths) if e.split == "test"]
    a, b = entries[0], entries[1]
    gaps = [abs(ia - ib) for _, ia, ib in disagreements(a, b, 5)]
    assert gaps == sorted(gaps, reverse=True) and len(gaps) == 5


def test_report_page_end_to_end(scored, tmp_path):
    release, paths = scored
    out = tmp_path / "page"
    proc = run_cli("report", str(release), *map(str, paths), "--out", str(out), "--gallery", "3",
                   "--resamples", "200")
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    table = page[page.index('id="table1"'):page.index("</table>")]
    assert "oracle-box-sam [oracle]" in table and "full</td>" in table
    assert all(row.method in table for row in PAPER_TABLE1)
    assert "28.5 / 18.6" in table                                       # OVSeg val, as reported
    assert table.count("<small>[") == 3 * 4                             # CIs for 3 methods x 4 columns
    sig = page[page.index('id="significance"'):]
    assert sig.count("p = ") == 2 * 2 * 2                               # 2 splits x 2 others x 2 metrics
    n_common = len(load_split(release, "test"))
    assert len(re.findall(r"<circle ", page)) == n_common                # one dot per test query
    shown = re.findall(r'src="gallery/([^"]+)"', page)
    assert len(shown) == 6 and all((out / "gallery" / name).is_file() for name in shown)
    assert "mask not drawn" not in page


def test_report_without_predictions_still_draws_the_page(scored, tmp_path):
    release, paths = scored
    moved = tmp_path / "results"
    moved.mkdir()
    copies = [Path(shutil.copy(p, moved / p.name)) for p in paths if "-test" in p.name]
    proc = run_cli("report", str(release), *map(str, copies), "--out", str(tmp_path / "page"), "--no-reported",
                   "--resamples", "100")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    assert "mask not drawn" in page and "OVSeg" not in page


def test_report_on_a_non_results_file_is_one_line(scored, tmp_path):
    release, _ = scored
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = run_cli("report", str(release), str(bad), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_demo_step_runs_the_model_methods_with_random_weights(tmp_path):
    from reasonseg.baselines.predict import DEMO_MODEL_METHODS, demo_step
    from reasonseg.metrics.report import read_results

    release = small_release(tmp_path / "release", counts={"train": 2, "val": 2, "test": 2})
    result = demo_step(tmp_path / "demo", release, bootstrap=20)
    assert result["label"] == "random weights" and set(result["methods"]) == set(DEMO_MODEL_METHODS)
    for name, by_split in result["methods"].items():
        for split, paths in by_split.items():
            doc = read_results(paths["results"])
            assert doc["split"] == split
            assert doc["method"] == f"{name} (random weights)" and doc["groups"]["overall"]["n"] == 2
    page = write_comparison_page(tmp_path / "page", release, result)
    assert "oracle-sam-best (random weights) [oracle]" in page


def write_comparison_page(out, release, result) -> str:
    from reasonseg.metrics.comparison import write_comparison

    paths = [p["results"] for by_split in result["methods"].values() for p in by_split.values()]
    return write_comparison(out, release, paths, n_resamples=50).read_text()
