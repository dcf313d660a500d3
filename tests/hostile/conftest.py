"""Fixtures shared by the hostile tests: one synthetic release per test module, and its val and test samples."""
from __future__ import annotations

import pytest

from reasonseg.dataset import load_split
from reasonseg.sample import write_sample_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("hostile") / "release")


@pytest.fixture(scope="module")
def samples(release):
    return {split: load_split(release, split) for split in ("val", "test")}
