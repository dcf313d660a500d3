"""What collapses first when a tiny LISA fails to learn the query? One arm of `lisa_learns_task.py`, instrumented.

Trains one arm of a work folder that `lisa_learns_task.py prepare` wrote (its recipe, `--max-steps` of its schedule,
no validation) and logs, per optimizer step, the gradient norms that reach the LLM, `text_hidden_fcs` and the mask
decoder; every `--every` steps it also probes 20 val scenes (3 queries each, teacher-forced as `lisa eval`):

- `state_cos`: mean cosine, between the queries of one image, of the LLM state read for `[SEG]` (1.0: the state is
  the same whatever is asked); `state_var_within_image`: its variance across those queries;
- `prompt_cos`: the same for the prompt token `text_hidden_fcs` hands to SAM;
- `live_relu`: how many of `text_hidden_fcs`' ReLU units are positive for any probe query;
- `swap_hits`: queries whose predicted mask overlaps the queried object more than either other object (chance 1/3).

Usage: python benchmarks/lisa_collapse_probe.py WORK --arm real --max-steps 300 --every 50 [--set KEY=JSON ...]
Writes WORK/probe-<arm>.jsonl (one line per step) and prints the probe lines.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import lisa_learns_task as task  # noqa: E402

PROBE_SCENES = 20


def _grad_norm(params) -> float:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def _mean_offdiag_cosine(x: torch.Tensor) -> float:
    x = torch.nn.functional.normalize(x, dim=-1)
    c = x @ x.T
    return float((c.sum() - c.diag().sum()) / (c.numel() - len(c)))


class Probe:
    """The probe queries of a work folder's val split, and what the model makes of them."""

    def __init__(self, work: Path, tokenizer, processor):
        from reasonseg.dataset import load_split
        from reasonseg.masks import rasterize_shapes
        from reasonseg.sample.grounding import read_scenes

        samples = {s.id: s for s in load_split(work / "release", "val")}
        self.scenes = read_scenes(work / "release", "val")[:PROBE_SCENES]
        self.items, self.objects = [], []
        for scene in self.scenes:
            self.objects.append([rasterize_shapes(samples[i].shapes, samples[i].height, samples[i].width) == 1
                                 for i in scene])
            for i in scene:
                query = samples[i].queries("lisa")[0]
                self.items.append((samples[i].image_path, query.text, query.is_sentence))
        self.tokenizer, self.processor = tokenizer, processor

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict:
        from reasonseg.lisa.infer import LisaPredictor

        training = model.training
        model.eval()
        seen: dict[str, list[torch.Tensor]] = {"state": [], "pre_relu": [], "prompt": []}
        fcs = model.text_hidden_fcs
        hooks = [fcs.register_forward_pre_hook(lambda m, a: seen["state"].append(a[0].clone())),
                 fcs[0].register_forward_hook(lambda m, a, o: seen["pre_relu"].append(o.clone())),
                 fcs.register_forward_hook(lambda m, a, o: seen["prompt"].append(o.clone()))]
        try:
            logits = LisaPredictor(model, self.tokenizer, self.processor, "cpu", torch.float32).segment(
                self.items, return_logits=True)
        finally:
            for hook in hooks:
                hook.remove()
        n = len(self.scenes)
        state = torch.cat(seen["state"]).view(n, 3, -1)
        prompt = torch.cat(seen["prompt"]).view(n, 3, -1)
        hits = 0
        for k, objects in enumerate(self.objects):
            for j in range(3):
                ious = [task._iou(logits[3 * k + j] > 0, obj) for obj in objects]
                hits += int(ious[j] > max(ious[x] for x in range(3) if x != j))
        if training:
            model.train()
        return {"step": step, "state_cos": float(np.mean([_mean_offdiag_cosine(state[k]) for k in range(n)])),
                "prompt_cos": float(np.mean([_mean_offdiag_cosine(prompt[k]) for k in range(n)])),
                "state_var_within_image": float(state.var(dim=1).mean()),
                "live_relu": int((torch.cat(seen["pre_relu"]) > 0).any(0).sum()),
                "swap_hits": hits, "swap_queries": 3 * n}


def main() -> None:
    import yaml

    import reasonseg.lisa.train as train_module
    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.preprocess import ClipPreprocessor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("--arm", choices=task.ARMS, default="real")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--set", nargs="*", default=[], help="recipe overrides KEY=JSON (e.g. lr=0.001)")
    parser.add_argument("--freeze-llm", action="store_true",
                        help="diagnosis: keep every LLM weight (LoRA, embeddings, lm_head included) frozen, so only "
                             "text_hidden_fcs and the mask decoder learn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    doc = json.loads((work / "recipe.json").read_text(encoding="utf-8"))
    doc.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    doc.update({"data": {"qa": str(work / f"qa-{args.arm}"), "val": None}, "out": str(work / f"probe-run-{args.arm}"),
                "max_steps": args.max_steps, "val_every": None})
    config_path = work / f"probe-{args.arm}.yaml"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    config = train_module.load_config(config_path)
    loaded = load_lisa(doc["model"])
    probe = Probe(work, loaded.tokenizer, ClipPreprocessor.from_pretrained(loaded.vision_tower_path))
    log = open(work / f"probe-{args.arm}.jsonl", "w", encoding="utf-8")
    held: dict = {}

    # The model train() builds, and its gradients just before clipping: read through the two calls train() makes.
    set_trainable, clip = train_module.set_trainable, torch.nn.utils.clip_grad_norm_

    def grab_model(model, groups):
        held["model"] = model
        names = set_trainable(model, groups)
        line = probe(model, 0)
        log.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)
        return names

    def read_grads(params, max_norm, *a, **k):
        model = held["model"]
        held["grads"] = {
            "grad_llm": _grad_norm(p for n, p in model.named_parameters() if n.startswith("llm.") and p.requires_grad),
            "grad_fcs": _grad_norm(model.text_hidden_fcs.parameters()),
            "grad_decoder": _grad_norm(model.sam.mask_decoder.parameters())}
        return clip(params, max_norm, *a, **k)

    def on_step(s: dict) -> None:
        line = {"step": s["step"], "loss": s["loss"], "lr": s["lr"], **held["grads"]}
        if s["step"] % args.every == 0:
            line.update(probe(held["model"], s["step"]))
            print(json.dumps(line), flush=True)
        log.write(json.dumps(line) + "\n")
        log.flush()

    if args.freeze_llm:
        task.freeze_llm_in_training()
    set_trainable = train_module.set_trainable
    train_module.set_trainable, torch.nn.utils.clip_grad_norm_ = grab_model, read_grads
    train_module.train(config, resume=False, on_step=on_step)


if __name__ == "__main__":
    main()
