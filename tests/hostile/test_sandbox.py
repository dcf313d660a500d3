"""The sandboxed reader on its own: each limit it enforces ends the child and becomes one typed line, a file's own
error comes back as the same typed error the in-process reader raises, and a trusted run reads in process."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from upload_helpers import nested_lists_value, zero_run_rle

from reasonseg.errors import ReadLimitError, ReasonSegError
from reasonseg.masks import encode_rle
from reasonseg.metrics.groundtruth import load_ground_truth
from reasonseg.sandbox import TRUSTED, Sandbox, SandboxLimits, _load_reply
from reasonseg.submission import Limits

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gt(release):
    return load_ground_truth(release, "val", cache_dir=None)


def upload(gt, zeros: int = 0, head: bytes = b'"reasonseg-predictions"') -> bytes:
    """Empty masks for the split, the first led by `zeros` zero-length runs; `head` is the "format" value."""
    entries = []
    for mask in gt.masks.values():
        rle = encode_rle(np.zeros((mask.height, mask.width), np.uint8))
        entries.append({"id": mask.id, "text_index": 0, "mask": zero_run_rle(rle, zeros) if not entries else rle})
    rest = json.dumps({"version": 1, "split": "val", "predictions": entries}).encode()
    return b'{"format": ' + head + b", " + rest[1:]


def read(limits: SandboxLimits, data: bytes, gt):
    with Sandbox(limits) as sandbox:
        return sandbox.run_costed("check_upload", {"where": "f.json", "limits": Limits(), "gt": gt}, data,
                                  where="f.json", honest=lambda: "7 MiB and 0.1 s")


def test_an_honest_file_is_read_with_its_cost_measured(gt):
    result, cost = read(SandboxLimits(), upload(gt), gt)
    assert result["masks"] == len(gt.masks) and 0 <= cost.memory_mib < 64 and cost.cpu_s < 5
    assert read(TRUSTED, upload(gt), gt) == (result, None)          # trusted: in process, unmeasured


def test_memory_over_the_limit_is_one_line_with_the_honest_cost(gt):
    with pytest.raises(ReadLimitError) as breach:
        read(SandboxLimits(memory_mib=64), upload(gt, zeros=32 * MIB), gt)
    assert breach.value.render() == ("f.json: needs more than 64 MiB to read; the honest form of this split takes "
                                     "about 7 MiB and 0.1 s")


def test_wall_clock_over_the_limit_kills_the_child(gt):
    with pytest.raises(ReadLimitError, match=r"needs more than 0.2 s \(wall clock\) to read"):
        read(SandboxLimits(memory_mib=2048, wall_s=0.2), upload(gt, head=nested_lists_value(16 * MIB)), gt)


def test_a_files_own_error_comes_back_typed_and_unchanged(gt):
    data = upload(gt, head=b'"other"')
    with pytest.raises(ReasonSegError) as sandboxed:
        read(SandboxLimits(), data, gt)
    with pytest.raises(ReasonSegError) as in_process:
        read(TRUSTED, data, gt)
    assert type(sandboxed.value) is type(in_process.value) and "'format' must be" in sandboxed.value.render()
    assert sandboxed.value.render() == in_process.value.render()


def test_a_reply_may_hold_only_what_replies_hold():
    with pytest.raises(pickle.UnpicklingError, match="may not hold"):
        _load_reply(pickle.dumps(("ok", os.system, [], (0, 0, 0))))
    reply = ("ok", {"masks": 3}, [], (1.0, 0.1, 0.2))
    assert _load_reply(pickle.dumps(reply)) == reply


def test_cpu_over_the_limit_ends_the_child(gt):
    with pytest.raises(ReadLimitError, match=r"needs more than 1 s of CPU to read"):
        read(SandboxLimits(memory_mib=2048, cpu_s=1, wall_s=120), upload(gt, head=nested_lists_value(16 * MIB)), gt)
