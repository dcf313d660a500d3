import subprocess
import sys

import reasonseg


def test_public_api_resolves_every_export():
    for name in reasonseg.__all__:
        assert getattr(reasonseg, name) is not None


def test_import_is_cheap_and_scoring_needs_no_torch_or_opencv():
    code = ("import sys, reasonseg, reasonseg.metrics.scoring, reasonseg.cli; "
            "print(sorted(m for m in ('torch', 'cv2', 'transformers', 'pycocotools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
