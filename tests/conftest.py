import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Loading weights in-process (`baselines.weights.offline`) sets these for the rest of the process, as `predict`
# means to; a test puts them back, so a later test's subprocesses get the environment the suite started with.
_SET_BY_WEIGHT_LOADING = ("HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY")


@pytest.fixture(autouse=True)
def _restore_weight_loading_environment():
    saved = {name: os.environ.get(name) for name in _SET_BY_WEIGHT_LOADING}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
