"""A submission's page shows the drift table (the same predictions under every scorer's rules) for val results, as
`reasonseg score --rules all` computes it, and never for test (nothing more about hidden ground truth)."""
from __future__ import annotations

import html
import re

from test_leaderboard_api import _post, _wait

from reasonseg.metrics.drift import drift_table, evaluate_drift
from reasonseg.metrics.rules import PROFILES


def _drift_cells(page: str) -> list[list[str]]:
    table = re.search(r'<table class="board" id="drift">(.*?)</table>', page, re.S)
    assert table, "no drift table on the page"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]      # the header row first
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_val_pages_show_the_drift_table_and_test_pages_never_do(lb_server, lb_release, lb_preds):
    client, _db, token = lb_server()
    ids = {}
    for split in ("val", "test"):
        r = _post(client, token, split, "center-prior", lb_preds["center-prior"][split])
        assert r.status_code == 201, r.text
        ids[split] = r.json()["id"]
    for sid in ids.values():
        assert _wait(client, sid)["status"] == "done"

    expected = evaluate_drift(lb_release, lb_preds["center-prior"]["val"], "val", cache_dir=None)
    _, want = drift_table(expected)
    page = client.get(f"/submissions/{ids['val']}").text
    assert _drift_cells(page) == want
    assert [row[0] for row in want] == list(PROFILES)

    assert 'id="drift"' not in client.get(f"/submissions/{ids['test']}").text
    for route in (f"/api/submissions/{ids['test']}", "/api/leaderboard?split=test", "/leaderboard.json"):
        assert '"drift"' not in client.get(route).text, route
