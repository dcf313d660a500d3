"""The LISA reference model: LLaVA + SAM with embedding-as-mask (docs/lisa.md).

Modules import torch, transformers and segment-anything; nothing here is imported by the scoring path.
Entry points: `checkpoint.load_lisa` / `init_release`, `infer.LisaPredictor`, `train.train` / `export_run`,
`demo.demo_step`.
"""
