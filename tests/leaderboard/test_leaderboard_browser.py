"""The pages in headless Chromium against the real server process: upload through the form, the row appears,
sorting, the detail page, hostile names stay inert. A screenshot of the page is kept in the test's tmp folder."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from lb_helpers import ServerProcess, cli, post_submission

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
HOSTILE = "prior <img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                reason="Debian package chromium is not installed (apt-get install chromium)")


def _column(page, key: str) -> list[str]:
    index = int(page.get_attribute(f'th[data-key="{key}"]', "data-col"))
    return page.eval_on_selector_all("#board tbody tr:not([hidden])",
                                     f"rows => rows.map(r => r.cells[{index}].dataset.sort)")


def _ordered(values: list[str], descending: bool) -> bool:
    present = [float(v) for v in values if v != ""]
    missing_last = values == [v for v in values if v != ""] + [v for v in values if v == ""]
    return missing_last and present == sorted(present, reverse=descending)


def test_upload_through_the_form_sort_and_detail_page(lb_release, lb_preds, tmp_path):
    from playwright.sync_api import sync_playwright

    db = str(tmp_path / "browser.db")
    token = cli("leaderboard", "add-team", "browser team", "--db", db).stdout.strip()
    other = cli("leaderboard", "add-team", "form team", "--db", db).stdout.strip()   # one ranked row per team
    server = ServerProcess(lb_release, db, tmp_path, "--bootstrap", "100")
    try:
        for split in ("val", "test"):
            code, _ = post_submission(server.url, token, {"split": split, "method": "empty"}, "e.json",
                                      lb_preds["empty"][split].read_bytes())
            assert code == 201
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            # A refused upload shows the server's one-line error in the form.
            page.goto(server.url + "/submit")
            page.fill("#token", token)
            bad = tmp_path / "bad.json"
            bad.write_text("{not json")
            page.set_input_files("#file", str(bad))
            page.fill("#method", "bad")
            page.click("#submit-button")
            page.wait_for_function("document.getElementById('submit-error').textContent.startsWith('error 400')")
            assert "not JSON" in page.text_content("#submit-error")

            page.goto(server.url + "/submit")
            page.fill("#token", other)
            page.set_input_files("#file", str(lb_preds["center-prior"]["test"]))
            page.select_option("#split", "test")
            page.fill("#method", HOSTILE)
            page.fill("#model_size", "0B")
            page.select_option("#trained_on_val", "false")
            page.select_option("#checkpoint_selected_on", "test")
            page.click("#submit-button")
            page.wait_for_url(re.compile(r".*/submissions/\d+$"), timeout=30000)
            deadline = time.monotonic() + 60
            while page.text_content("#status") != "done":
                assert time.monotonic() < deadline, "the upload was never scored"
                time.sleep(0.3)
                page.reload()
            assert page.text_content("#method") == HOSTILE       # shown as text, never run
            assert "aggregates only" in page.content()
            assert page.locator("#groups tbody tr").count() == 3

            page.goto(server.url + "/")
            row = page.locator("#board tr.measured", has_text="prior <img")
            assert row.count() == 1
            assert "checkpoint chosen on test" in row.inner_text()
            assert page.evaluate("window.__pwned") is None
            # Default order: test overall gIoU, best first; a click turns it around, another column sorts anew.
            assert _ordered(_column(page, "test-overall-giou"), descending=True)
            page.click('th[data-key="test-overall-giou"] button')
            assert page.get_attribute('th[data-key="test-overall-giou"]', "aria-sort") == "ascending"
            assert _ordered(_column(page, "test-overall-giou"), descending=False)
            page.click('th[data-key="val-overall-ciou"] button')
            assert page.get_attribute('th[data-key="val-overall-ciou"]', "aria-sort") == "descending"
            assert _ordered(_column(page, "val-overall-ciou"), descending=True)
            assert page.locator("#board tr.reported:not([hidden])").count() == 15
            page.uncheck("#show-reported")
            assert page.locator("#board tr.reported:not([hidden])").count() == 0
            assert page.locator("#board tr.measured").count() == 2
            # At 1200 px, with paper rows and measured rows (CIs, badges, a long unbroken name), the page does not
            # scroll sideways.
            page.check("#show-reported")
            page.set_viewport_size({"width": 1200, "height": 900})
            width, view = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width <= view, (width, view)
            shot = tmp_path / "leaderboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # The detail page of the empty baseline's val entry has the per-query histogram.
            page.click('#board tr.measured:has-text("empty") a.team:text-is("val")')
            page.wait_for_url(re.compile(r".*/submissions/\d+$"))
            assert page.locator("#histogram rect").count() == 10
            page.screenshot(path=str(tmp_path / "detail.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
