"""Building: determinism, workers, chunking, the lisa mixing rates, no path rewriting, Parquet, the reader."""
import json

import numpy as np
import pytest
from qa_testlib import build, gotcha_root, read_records

from reasonseg.builders.qa import BuildOptions, QADataset, build_qa, open_sources
from reasonseg.builders.qa.demo import demo_step
from reasonseg.builders.qa.items import GROUPS
from reasonseg.errors import BuildError
from reasonseg.masks import decode_rle
from reasonseg.sample.qa_sources import write_qa_sources

# chi-square critical value, 3 degrees of freedom, p = 0.001
CHI2_3DF_999 = 16.27
CHI2_4DF_999 = 18.47


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_qa_sources(gotcha_root(tmp_path_factory.mktemp("qa")), seed=0, ade20k=6, reason_seg=6)


def test_exhaustive_is_deterministic_across_runs_and_workers(sources, tmp_path):
    build(sources, tmp_path / "a", per_sample=2)
    build(sources, tmp_path / "b", per_sample=2, workers=2)
    for name in ("qa.jsonl", "build.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    build(sources, tmp_path / "c", per_sample=2, seed=1)
    assert (tmp_path / "a" / "qa.jsonl").read_bytes() != (tmp_path / "c" / "qa.jsonl").read_bytes()


def test_exhaustive_chunks_and_covers_every_target(sources, tmp_path):
    _, three = build(sources, tmp_path / "three", per_sample=3)
    _, one = build(sources, tmp_path / "one", per_sample=1)
    seg = [r for r in three if r["source"] != "llava_instruct"]
    assert max(len(r["targets"]) for r in seg) == 3 and all(1 <= len(r["targets"]) <= 3 for r in seg)
    assert all(len(r["targets"]) == 1 for r in one if r["source"] != "llava_instruct")
    def count(rs):
        return sorted((r["source"], r["id"].split("/")[1], t) for r in rs for t in r["targets"]
                                  if r["source"] not in ("pascal_part", "paco_lvis"))  # part phrasing is random
    assert count(three) == count(one)
    ids = [r["id"] for r in three]
    assert len(set(ids)) == len(ids)
    for rec in three:
        assert sum(t["value"].count("[SEG]") for t in rec["conversations"]) == len(rec["masks"])
        assert sum(t["value"].count("<image>") for t in rec["conversations"]) == 1


def test_paths_are_joined_not_rewritten(sources, tmp_path):
    """The root holds `images`, `cocostuff` and `.jpg`: every record's image exists under its recorded root."""
    _, records = build(sources, tmp_path / "out")
    log = json.loads((tmp_path / "out" / "build.json").read_text())
    from pathlib import Path

    for rec in records:
        root = Path(log["sources"][rec["source"]]["image_root"])
        assert (root / rec["image"]).is_file(), rec
    assert {r["source"] for r in records} == set(log["sources"])


def _chi2(observed, expected_p):
    observed = np.asarray(observed, float)
    expected = observed.sum() * np.asarray(expected_p, float)
    return float(((observed - expected) ** 2 / expected).sum())


def test_lisa_mode_follows_group_rates_and_uniform_datasets(sources, tmp_path):
    n = 3000
    _, records = build(sources, tmp_path / "out", mode="lisa", samples=n, seed=7, workers=2)
    assert len(records) == n
    log = json.loads((tmp_path / "out" / "build.json").read_text())
    group_of = {name: s["group"] for name, s in log["sources"].items()}
    groups = [group_of[r["source"]] for r in records]
    rates = np.array([9, 3, 3, 1]) / 16
    observed = [groups.count(g) for g in GROUPS]
    assert _chi2(observed, rates) < CHI2_3DF_999
    assert _chi2(observed, [0.25] * 4) > 10 * CHI2_3DF_999  # the test can tell other rates apart
    # Every attempt picks a dataset uniformly within the group; a redraw re-picks it, so the uniform counts are of
    # attempts: samples written plus redraws (build.json counts those per source).
    sem = [r["source"] for r in records if group_of[r["source"]] == "sem_seg"]
    attempts = [sem.count(s) + log["redrawn_items"].get(s, 0) for s in ("ade20k", "cocostuff", "mapillary",
                                                                         "paco_lvis", "pascal_part")]
    assert _chi2(attempts, [0.2] * 5) < CHI2_4DF_999
    refer = [r["source"] for r in records if group_of[r["source"]] == "refer_seg"]
    assert _chi2([refer.count(s) for s in ("refclef", "refcoco", "refcoco+", "refcocog")], [0.25] * 4) \
        < CHI2_3DF_999
    # Up to 3 distinct targets; all-ignore images are redrawn, never written.
    for rec in records:
        assert len(rec["targets"]) <= 3
        if rec["source"] in ("ade20k", "cocostuff"):
            assert len(set(rec["targets"])) == len(rec["targets"]) >= 1
    assert "ADE_train_00000002" not in {r["id"].split("/")[1] for r in records}
    assert log["redrawn_items"].get("ade20k", 0) > 0


def test_lisa_rates_renormalise_over_present_groups(sources, tmp_path):
    specs = {k: sources[k] for k in ("ade20k", "reason_seg")}
    _, records = build(specs, tmp_path / "out", mode="lisa", samples=1000, seed=3)
    share = sum(r["source"] == "ade20k" for r in records) / len(records)
    assert abs(share - 0.9) < 0.03


def test_parquet_copy_matches(sources, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    build(sources, tmp_path / "out", parquet=True, mode="lisa", samples=60)
    assert pq.read_table(tmp_path / "out" / "qa.parquet").to_pylist() == read_records(tmp_path / "out")


def test_qadataset_decodes_masks_and_resolves_images(sources, tmp_path):
    _, records = build(sources, tmp_path / "out", per_sample=2)
    data = QADataset(tmp_path / "out")
    assert len(data) == len(records)
    for k in (0, len(records) // 2, len(records) - 1):
        rec, raw = data[k], records[k]
        assert rec.id == raw["id"] and rec.image_path.is_file()
        assert all(np.array_equal(m, decode_rle(r)) for m, r in zip(rec.masks, raw["masks"], strict=True))
        assert all(m.dtype == np.uint8 and m.shape == tuple(r["size"])
                   for m, r in zip(rec.masks, raw["masks"], strict=True))
        assert len(rec.turns) == len(raw["conversations"]) // 2
        # The reference's layout: one conversation per templated question, each opening with the image.
        convs = rec.reference_conversations
        if raw["templates"]:
            assert [c[0]["value"].removeprefix("<image>\n") for c in convs] == \
                [q.removeprefix("<image>\n") for q, _ in rec.turns]
            assert all(len(c) == 2 and c[0]["value"].startswith("<image>\n") for c in convs)
        else:
            assert convs == [raw["conversations"]]
    assert [r.id for r in data] == [r["id"] for r in records]
    lazy = QADataset(tmp_path / "out", decode_masks=False)
    assert lazy[0].masks == records[0]["masks"]


def test_bad_options_and_sources(sources, tmp_path):
    with pytest.raises(BuildError, match="unknown mode"):
        build_qa(open_sources({"ade20k": sources["ade20k"]}), tmp_path, BuildOptions(mode="random"))
    with pytest.raises(BuildError, match="unknown source 'ade21k'"):
        open_sources({"ade21k": sources["ade20k"]})
    with pytest.raises(BuildError, match="not found"):
        open_sources({"ade20k": tmp_path / "nowhere"})


def test_demo_step_writes_sources_qa_and_stats(tmp_path):
    qa = demo_step(tmp_path / "demo", samples=80)
    stats = json.loads((qa / "stats.json").read_text())
    assert stats["records"] == 80 and (qa / "class_frequency.png").stat().st_size > 1000
    first = (qa / "qa.jsonl").read_bytes()
    demo_step(tmp_path / "demo", samples=80)
    assert (qa / "qa.jsonl").read_bytes() == first
