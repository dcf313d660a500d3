"""Adapters for the tools researchers already run: lmms-eval (`integrations.lmms_eval`, a task folder and two
models) and torchmetrics (`integrations.torchmetrics.ReasonSegIoU`).

Each adapter imports its tool only inside itself: `import reasonseg` never imports lmms_eval or torchmetrics.
Both need the `harness` extra (`pip install 'reasonseg[harness]'`).
"""
