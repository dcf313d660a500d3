"""The score report and the comparison page laid out in headless Chromium: histogram labels, axis titles, the
colour legend, the size breakdown; and the leaderboard's metadata columns on the paper's rows."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reasonseg.dataset import load_split
from reasonseg.masks import rasterize_shapes
from reasonseg.sample import write_sample_release
from reasonseg.schema import TARGET
from reasonseg.submission import prediction_from_mask, write_predictions

playwright = pytest.importorskip("playwright.sync_api")
EXE = str(Path(sys.executable).with_name("reasonseg"))
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A score report and a comparison page of two methods, written by the CLI."""
    work = tmp_path_factory.mktemp("pages")
    release = write_sample_release(work / "release", counts={"val": 10, "test": 0, "train": 0})
    env = {**os.environ, "REASONSEG_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(0)
    results = []
    for name, shift in (("near", 2), ("far", 30)):
        preds = []
        for s in load_split(release, "val"):
            target = rasterize_shapes(s.shapes, s.height, s.width) == TARGET
            preds.append(prediction_from_mask(s.id, 0, np.roll(target, int(rng.integers(0, shift + 1)), axis=1)))
        write_predictions(work / f"{name}.json", preds, "val", name)
        args = ["score", release, work / f"{name}.json", "--split", "val", "--out", work / f"{name}-r.json",
                "--bootstrap", "50"] + (["--report", work / "report"] if name == "near" else [])
        proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        results.append(work / f"{name}-r.json")
    proc = subprocess.run([EXE, "report", str(release), *map(str, results), "--out", str(work / "comparison"),
                           "--resamples", "50", "--predictions", str(work / "near.json"), "--predictions",
                           str(work / "far.json")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return work / "report" / "index.html", work / "comparison" / "index.html"


def boxes(page, selector):
    return [page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())]


def overlap(a, b) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def inside(inner, outer) -> bool:
    return (inner["x"] >= outer["x"] - 0.5 and inner["y"] >= outer["y"] - 0.5
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5)


def test_report_histogram_labels_are_exact_and_unclipped(browser, pages):
    page = browser.new_page()
    page.goto(pages[0].as_uri())
    ticks = page.locator("svg.histogram text.tick")
    assert ticks.all_text_contents() == ["0", "0.25", "0.5", "0.75", "1"]
    svg = page.locator("svg.histogram").bounding_box()
    tick_boxes = boxes(page, "svg.histogram text.tick")
    assert all(inside(b, svg) for b in tick_boxes)
    assert not any(overlap(a, b) for i, a in enumerate(tick_boxes) for b in tick_boxes[i + 1:])
    assert inside(page.locator("svg.histogram text.caption").bounding_box(), svg)
    assert sum(int(t) for t in page.locator("svg.histogram text.count").all_text_contents()) == 10
    page.close()


def test_report_shows_the_legend_and_the_size_breakdown(browser, pages):
    page = browser.new_page()
    page.goto(pages[0].as_uri())
    legend = page.locator(".legend").first
    assert legend.is_visible() and "prediction" in legend.inner_text() and "ignore" in legend.inner_text()
    swatch = page.locator(".legend .swatch").first
    assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(230, 0, 0)"
    groups = page.locator("table tbody tr td:first-child").all_inner_texts()
    assert {"short", "long", "small", "medium", "large"} <= set(groups)
    assert "0.33% of the image" in page.content()
    # The footer names the predictions file's hash once ("predictions sha256 sha256:..." before).
    footer = page.locator("body > p small").last.inner_text()
    assert footer.startswith("predictions sha256:") and footer.count("sha256") == 1, footer
    page.close()


def test_comparison_axis_titles_clear_the_ticks_and_gallery_has_a_legend(browser, pages):
    page = browser.new_page()
    page.goto(pages[1].as_uri())
    svg = page.locator("svg.scatter").bounding_box()
    for title, ticks in (("text.ytitle", "text.ytick"), ("text.xtitle", "text.xtick")):
        title_box = page.locator(f"svg.scatter {title}").bounding_box()
        assert inside(title_box, svg)
        assert not any(overlap(title_box, b) for b in boxes(page, f"svg.scatter {ticks}")), title
    assert page.locator(".legend").is_visible()
    assert page.locator(".gallery img").count() > 0
    page.close()


def test_leaderboard_paper_rows_have_their_metadata(browser, tmp_path):
    pytest.importorskip("jinja2")
    from reasonseg.leaderboard.board import build_entries
    from reasonseg.leaderboard.render import Links, render_index

    index = tmp_path / "index.html"
    index.write_text(render_index(build_entries({}), Links(static=True)))
    page = browser.new_page()
    page.goto(index.as_uri())
    rows = page.locator("tr.reported")
    assert rows.count() == 15
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        meta = cells[-4:]
        assert all(c.strip() for c in meta), cells
    lisa = page.locator("tr.reported", has_text="LISA-13B-LLaVA1.5 (ft)").locator("td").all_inner_texts()
    assert "13B" in lisa and any("ReasonSeg train" in c for c in lisa)
    page.close()
