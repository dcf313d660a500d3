"""The `lmms_eval.models` entry point: lmms-eval calls `manifests()` when it builds its model registry."""
from __future__ import annotations

MODELS = {
    "reasonseg_replay": "reasonseg.integrations.lmms_eval.models.ReplayModel",
    "reasonseg_lisa": "reasonseg.integrations.lmms_eval.models.LisaModel",
}


def manifests() -> list:
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=path) for name, path in MODELS.items()]
