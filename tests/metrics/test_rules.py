"""Scoring rules against the numbers the peers' own code gives (fixtures/peer-scorers: a 40-image val split, two
predictions files and, per scorer, gIoU, cIoU, the count and every counted query's I and U as its code computed
them), through the command line and the library; and the rules as options (overrides, records, refusals)."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from test_scorer_cli import run

import reasonseg
from reasonseg.errors import ReasonSegError, SubmissionError
from reasonseg.masks import intervals_area, intervals_to_mask, mask_to_intervals
from reasonseg.metrics.groundtruth import load_ground_truth
from reasonseg.metrics.rules import PROFILES, resolve_rules, summary
from reasonseg.metrics.scoring import evaluate, evaluate_predictions
from reasonseg.submission import read_predictions

FIXTURE = Path(__file__).parent / "fixtures" / "peer-scorers"
RELEASE = FIXTURE / "release"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOLERANCE = EXPECTED["tolerance"]
FILES = ("predictions.json", "predictions-missing.json")
CASES = [(name, file) for name in PROFILES for file in FILES]

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "REASONSEG_CACHE": str(tmp_path_factory.mktemp("cache")), "OMP_NUM_THREADS": "1"}


def test_the_fixture_and_the_command_line_cover_every_profile():
    from typing import get_args

    from reasonseg.commands.common import RulesChoice, RulesName

    assert set(EXPECTED["rules"]) == set(PROFILES)
    assert all(set(EXPECTED["rules"][name]) == set(FILES) for name in PROFILES)
    assert get_args(RulesName) == tuple(PROFILES) and get_args(RulesChoice) == (*PROFILES, "all")


def assert_numbers(got: dict, want: dict) -> None:
    assert got["n_queries_counted"] == want["n_queries_counted"]
    assert got["giou"] == pytest.approx(want["giou"], abs=TOLERANCE)
    if want["ciou"] is None:
        assert got["ciou"] is None
    else:
        assert got["ciou"] == pytest.approx(want["ciou"], abs=TOLERANCE)


def counted_queries(document: dict) -> list[dict]:
    """The results' rows that count in gIoU, as the fixture lists them (id, text_index, I, U, missing)."""
    return [{"id": q["id"], "text_index": q["text_index"], "intersection": q["intersection"], "union": q["union"],
             **({"missing": True} if q.get("missing") else {})}
            for q in document["queries"] if q["iou"] is not None]


@pytest.mark.parametrize("name,file", CASES)
def test_library_reproduces_each_peer_scorer(name, file):
    want = EXPECTED["rules"][name][file]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # unscored other texts, degenerate shares: not what is tested here
        if "error" in want:
            with pytest.raises(SubmissionError, match="have no prediction"):
                evaluate(RELEASE, FIXTURE / file, "val", rules=name, bootstrap=0, cache_dir=None)
            return
        ev = evaluate(RELEASE, FIXTURE / file, "val", rules=name, bootstrap=0, cache_dir=None)
    assert_numbers(summary(PROFILES[name], ev.scores), want)
    overall = ev.document["groups"]["overall"]
    assert_numbers({**overall, "n_queries_counted": want["n_queries_counted"]}, want)
    assert ev.document["rules"] == name and ev.document["rule_axes"] == PROFILES[name].axes()
    assert by_key(counted_queries(ev.document)) == by_key(EXPECTED["queries"][name][file])


def by_key(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda q: (q["id"], q["text_index"]))


@pytest.mark.parametrize("name,file", CASES)
def test_command_line_reproduces_each_peer_scorer(name, file, env):
    want = EXPECTED["rules"][name][file]
    proc = run("score", RELEASE, FIXTURE / file, "--split", "val", "--rules", name, "--bootstrap", "0", "--json",
               env=env)
    if "error" in want:
        assert_one_line_error(proc, "have no prediction", file)
        return
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rules"] == name
    assert_numbers({**doc["groups"]["overall"], "n_queries_counted": len(counted_queries(doc))}, want)
    assert by_key(counted_queries(doc)) == by_key(EXPECTED["queries"][name][file])


@pytest.mark.parametrize("file", FILES)
def test_the_metric_object_scores_under_each_rules_like_the_file(file):
    """ReasonSegMetric(rules=...) fed the decoded masks one by one gives the peers' numbers too."""
    gt = load_ground_truth(RELEASE, "val", cache_dir=None)
    preds = read_predictions(FIXTURE / file)
    for name in PROFILES:
        want = EXPECTED["rules"][name][file]
        metric = reasonseg.ReasonSegMetric(gt, rules=name, bootstrap=0)
        for (sid, k), pred in preds.masks.items():
            metric.update(sid, k, intervals_to_mask(pred.intervals, pred.height, pred.width))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "error" in want:
                with pytest.raises(SubmissionError, match="have no prediction"):
                    metric.compute()
                continue
            doc = metric.compute()
        assert_numbers({**doc["groups"]["overall"], "n_queries_counted": len(counted_queries(doc))}, want)


def test_drift_table_through_the_command_line(env, tmp_path):
    for file in FILES:
        proc = run("score", RELEASE, FIXTURE / file, "--split", "val", "--rules", "all", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["format"] == "reasonseg-drift" and doc["version"] == 1 and doc["split"] == "val"
        rows = {row["rules"]: row for row in doc["rows"]}
        assert list(rows) == list(PROFILES)
        lisa = EXPECTED["rules"]["lisa"][file]
        for name, row in rows.items():
            want = EXPECTED["rules"][name][file]
            if "error" in want:
                assert "have no prediction" in row["error"] and "giou" not in row
                continue
            assert_numbers(row, want)
            if "error" in lisa or want["ciou"] is None:
                assert row["ciou_minus_lisa"] is None
            else:
                assert row["ciou_minus_lisa"] == pytest.approx(want["ciou"] - lisa["ciou"], abs=2 * TOLERANCE)
            assert (row["giou_minus_lisa"] is None) == ("error" in lisa)
    # The printed table: one row per profile, in points, the refusals named below it.
    proc = run("score", RELEASE, FIXTURE / "predictions-missing.json", "--split", "val", "--rules", "all", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    xsam = EXPECTED["rules"]["x-sam"]["predictions-missing.json"]
    assert any("x-sam" in line and f"{100 * xsam['giou']:.2f}" in line and " 62 " in line for line in lines)
    assert any(line.startswith("refused: lisa:") for line in lines)
    assert any(line.startswith("refused: mmdet-refseg:") for line in lines)


def test_drift_tables_render_as_markdown_and_latex_and_in_the_report(env, tmp_path):
    drift = tmp_path / "drift.json"
    proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", "--rules", "all", "--out", drift,
               "--report", tmp_path / "report", "--bootstrap", "50", env=env)
    assert proc.returncode == 0, proc.stderr
    want = {name: EXPECTED["rules"][name]["predictions.json"] for name in PROFILES}
    lisa = want["lisa"]["giou"]
    markdown = run("table", drift, env=env)
    assert markdown.returncode == 0, markdown.stderr
    rows = [line for line in markdown.stdout.splitlines() if line.startswith("| peer-fixture")]
    assert [row.split(" | ")[2] for row in rows] == list(PROFILES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[2]
        assert cells[3] == f"{100 * want[name]['giou']:.2f}"
        assert cells[4] == ("-" if want[name]["ciou"] is None else f"{100 * want[name]['ciou']:.2f}")
        assert cells[5] == str(want[name]["n_queries_counted"])
        assert cells[6] == f"{100 * (want[name]['giou'] - lisa):+.2f}"
    latex = run("table", drift, "--format", "latex", env=env)
    assert latex.returncode == 0, latex.stderr
    assert r"\begin{tabular}" in latex.stdout and r"$\Delta$gIoU vs lisa" in latex.stdout
    assert r"peer-fixture-seed1 & val & seg-zero & " + f"{100 * want['seg-zero']['giou']:.2f} & - & 38" in latex.stdout
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="drift"' in page and page.count("<tr><td>") >= len(PROFILES)
    assert f"<td>mmdet-refseg</td><td>{100 * want['mmdet-refseg']['giou']:.2f}</td>" in page
    mixed = run("table", drift, FIXTURE / "expected.json", env=env)
    assert mixed.returncode == 2


def test_rules_all_takes_no_axis_override(env):
    proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", "--rules", "all", "--protocol",
               "all-texts", env=env)
    assert_one_line_error(proc, "--rules all", "--protocol")


def test_compare_refuses_results_under_different_rules(env, tmp_path):
    paths = {}
    for name in ("lisa", "x-sam"):
        paths[name] = tmp_path / f"{name}.json"
        proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", "--rules", name, "--bootstrap",
                   "0", "--out", paths[name], env=env)
        assert proc.returncode == 0, proc.stderr
    proc = run("compare", RELEASE, paths["lisa"], paths["x-sam"], "--split", "val", env=env)
    assert_one_line_error(proc, "'lisa'", "'x-sam'", "different rules")
    # Asking for other rules than a results file's is refused too, naming both.
    proc = run("compare", RELEASE, paths["x-sam"], FIXTURE / "predictions.json", "--rules", "lisa", env=env)
    assert_one_line_error(proc, "x-sam", "lisa", str(paths["x-sam"]))
    # Under one set of rules, a results file and the predictions scored now compare.
    proc = run("compare", RELEASE, paths["x-sam"], FIXTURE / "predictions.json", "--rules", "x-sam", "--json",
               env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rules"] == "x-sam" and all(d["delta"] == 0 for d in out["differences"])


def test_table_marks_and_refuses_mixed_rules(env, tmp_path):
    paths = {}
    for name, extra in (("lisa", ()), ("x-sam", ()), ("zero", ("--empty-union", "zero"))):
        paths[name] = tmp_path / f"{name}.json"
        rules = ("--rules", name) if name in PROFILES else ()
        proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", *rules, *extra, "--bootstrap",
                   "0", "--out", paths[name], "--method", name, env=env)
        assert proc.returncode == 0, proc.stderr
    assert_one_line_error(run("table", paths["lisa"], paths["zero"], env=env), "different rules",
                          "lisa (empty_union=zero)", "--allow-mixed")
    assert_one_line_error(run("table", paths["x-sam"], "--paper", env=env), "paper", "x-sam", "--allow-mixed")
    proc = run("table", paths["lisa"], "--paper", env=env)
    assert proc.returncode == 0 and "| lisa |" in proc.stdout
    proc = run("table", *paths.values(), "--paper", "--allow-mixed", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "| lisa |" in proc.stdout
    assert "| x-sam [rules x-sam] |" in proc.stdout
    assert "| zero [rules lisa (empty_union=zero)] |" in proc.stdout


def test_older_options_are_points_on_the_same_axes():
    """--protocol all-texts is lisa with texts=all; --empty-union and --missing override their axes; a profile with
    the same axes gives the same numbers, whichever way it was named."""
    assert resolve_rules(protocol="all-texts") == resolve_rules("lisa", protocol="all-texts")
    assert resolve_rules(protocol="all-texts").label == "lisa (texts=all)"
    assert resolve_rules("x-sam", protocol="lisa").texts == "first"
    with pytest.raises(ReasonSegError, match="unknown rules 'coco'"):
        resolve_rules("coco")
    with pytest.raises(SubmissionError, match="unknown missing policy 'maybe'"):
        resolve_rules(missing="maybe")
    gt = load_ground_truth(RELEASE, "val", cache_dir=None)
    preds = read_predictions(FIXTURE / "predictions.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = evaluate_predictions(gt, preds, "all-texts", empty_union="zero", bootstrap=0).document
        new = evaluate_predictions(gt, preds, rules=resolve_rules("lisa", protocol="all-texts", empty_union="zero"),
                                   bootstrap=0).document
    assert old["groups"] == new["groups"] and old["protocol"] == "all-texts" and old["empty_union"] == "zero"
    assert old["rules"] == "lisa" and old["rule_axes"]["texts"] == "all"
    # Changing only the ground-truth axis of x-sam's rules moves its number (the axis is live, not decorative).
    merged = dataclasses.replace(PROFILES["x-sam"], ignore="merged")
    moved = summary(merged, evaluate_predictions(gt, preds, rules=merged, bootstrap=0).scores)
    assert abs(moved["giou"] - EXPECTED["rules"]["x-sam"]["predictions.json"]["giou"]) > 1e-4
    assert merged.label == "x-sam (ignore=merged)"


def test_hub_mirror_ground_truth_defaults_to_visionreasoner_and_has_no_short_long(tmp_path, env):
    """Ground truth in the Hub mirrors' form (`publish --layout seg-zero`: the bool mask, text 0, no is_sentence) is
    scored under visionreasoner rules by default and gives that scorer's numbers; what the form lost is said once,
    in one line; the short/long groups it cannot compute are refused in one line."""
    pytest.importorskip("pyarrow")
    proc = run("publish", RELEASE, "--out", tmp_path / "mirror", "--layout", "seg-zero", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((FIXTURE / "predictions.json").read_text())
    doc["predictions"] = [p for p in doc["predictions"] if p["text_index"] == 0]
    text0 = tmp_path / "text0.json"
    text0.write_text(json.dumps(doc))
    proc = run("score", tmp_path / "mirror", text0, "--split", "val", "--bootstrap", "0", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rules"] == "visionreasoner" and result["dataset"]["form"] == "hub-mirror"
    assert_numbers({**result["groups"]["overall"], "n_queries_counted": 40},
                   EXPECTED["rules"]["visionreasoner"]["predictions.json"])
    assert "short" not in result["groups"] and "long" not in result["groups"]
    said = [line for line in proc.stderr.splitlines() if "first text" in line]
    assert len(said) == 1 and "is_sentence" in said[0] and "ignore" in said[0] and "visionreasoner" in said[0]
    results = tmp_path / "mirror-results.json"
    results.write_text(proc.stdout)
    proc = run("compare", tmp_path / "mirror", results, text0, "--group", "short", env=env)
    assert_one_line_error(proc, "no short group", "is_sentence")
    proc = run("score", tmp_path / "mirror", text0, "--split", "val", "--rules", "lisa", "--bootstrap", "0", "--json",
               env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rules"] == "lisa"


def test_metric_on_hub_mirror_ground_truth_defaults_to_visionreasoner():
    release = load_ground_truth(RELEASE, "val", cache_dir=None)
    masks = {}
    for sid, m in release.masks.items():
        merged = intervals_to_mask(m.target, m.height, m.width) | intervals_to_mask(m.ignore, m.height, m.width)
        masks[sid] = dataclasses.replace(m, texts=m.texts[:1], is_sentence=None, target=mask_to_intervals(merged),
                                         ignore=mask_to_intervals(merged[:0]))
    mirror = dataclasses.replace(release, masks=masks, form="hub-mirror")
    assert reasonseg.ReasonSegMetric(mirror).rules.name == "visionreasoner"
    assert reasonseg.ReasonSegMetric(mirror, rules="x-sam").rules.name == "x-sam"
    assert all(intervals_area(m.ignore) == 0 for m in mirror.masks.values())


def test_the_readme_drift_table_is_what_the_commands_print(tmp_path, env):
    """README's drift table on the sample's test split, made again with the commands it names."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    shown = [line for line in readme.splitlines() if line.startswith("| center-prior | test |")
             or line.startswith("| empty | test |")]
    assert len(shown) == 2 * len(PROFILES)
    assert run("sample", "--out", tmp_path / "rs-sample", env=env).returncode == 0
    drifts = []
    for method in ("center-prior", "empty"):
        preds = tmp_path / f"{method}.json"
        proc = run("predict", "--method", method, tmp_path / "rs-sample" / "release", "--split", "test",
                   "--protocol", "all-texts", "--out", preds, env=env)
        assert proc.returncode == 0, proc.stderr
        drifts.append(tmp_path / f"{method}.drift.json")
        proc = run("score", tmp_path / "rs-sample" / "release", preds, "--split", "test", "--rules", "all", "--out",
                   drifts[-1], env=env)
        assert proc.returncode == 0, proc.stderr
    table = run("table", *drifts, env=env)
    assert table.returncode == 0, table.stderr
    assert [line for line in table.stdout.splitlines() if line.startswith("| center-prior") or
            line.startswith("| empty")] == shown


def test_report_takes_results_under_one_set_of_rules(env, tmp_path):
    paths = {}
    for name in ("lisa", "x-sam"):
        paths[name] = tmp_path / f"{name}.json"
        proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", "--rules", name, "--bootstrap",
                   "0", "--out", paths[name], "--method", f"m-{name}", env=env)
        assert proc.returncode == 0, proc.stderr
    proc = run("report", RELEASE, paths["lisa"], paths["x-sam"], "--out", tmp_path / "mixed", env=env)
    assert_one_line_error(proc, "different rules", "(lisa)", "(x-sam)")
    assert not (tmp_path / "mixed").exists()
    proc = run("report", RELEASE, paths["lisa"], "--rules", "x-sam", "--out", tmp_path / "asked", env=env)
    assert_one_line_error(proc, "rules x-sam were asked for", "under lisa")
    proc = run("report", RELEASE, paths["x-sam"], "--rules", "x-sam", "--out", tmp_path / "page", "--resamples", "50",
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert "m-x-sam [rules x-sam]" in (tmp_path / "page" / "index.html").read_text()


def test_seg_zero_results_carry_no_ciou_anywhere(env, tmp_path):
    """Seg-Zero computes no cIoU: its results hold null, and the tables, the report and compare show none."""
    results = tmp_path / "sz.json"
    proc = run("score", RELEASE, FIXTURE / "predictions.json", "--split", "val", "--rules", "seg-zero", "--bootstrap",
               "50", "--out", results, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(results.read_text())
    assert all(row["ciou"] is None and "ciou_ci" not in row for row in doc["groups"].values())
    table = run("table", results, "--ci", env=env)
    assert table.returncode == 0 and table.stdout.splitlines()[-1].endswith("| - |"), table.stdout
    proc = run("compare", RELEASE, results, FIXTURE / "predictions.json", "--rules", "seg-zero", "--bootstrap", "50",
               "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [d["metric"] for d in json.loads(proc.stdout)["differences"]] == ["giou"]
