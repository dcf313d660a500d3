"""LISA inference latency, peak memory and training throughput, each against the naive path in the same run.

    python benchmarks/bench_lisa.py --size tiny --device cpu          # seconds, on any machine
    python benchmarks/bench_lisa.py --size 7b --device cuda           # one GPU, < 5 minutes on an H100

Random-initialised weights (nothing downloaded): the numbers measure compute, not accuracy. Paths compared:
- inference, per query: ours = bf16 on GPU (fp32 on CPU), KV cache, SAM embedding reused across the texts of an
  image; naive = fp32, every generation step re-runs the whole sequence, SAM re-encodes the image per query.
  Measured for teacher-forced `[SEG].` prediction (what `predict` does) and for chat generation (32 new tokens).
- peak GPU memory of our inference path (target: < 20 GB for 7B, so a 24 GB card serves it).
- training samples/s: ours = LoRA + bf16 (+ DeepSpeed ZeRO-2 when installed, on GPU); naive = the same trainable
  parts in fp32 with a plain AdamW loop.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonseg.lisa.checkpoint import new_model  # noqa: E402
from reasonseg.lisa.conversation import render, tokenize, validation_question  # noqa: E402
from reasonseg.lisa.data import Example, collate  # noqa: E402
from reasonseg.lisa.infer import LisaPredictor  # noqa: E402
from reasonseg.lisa.loss import lisa_loss  # noqa: E402
from reasonseg.lisa.preprocess import prepare_image  # noqa: E402
from reasonseg.lisa.train import LoraSettings, add_lora, set_trainable  # noqa: E402

QUERY = "Which object here could you use to keep the rain off while walking outside?"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int) -> float:
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def free(*objects) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class NaivePredictor(LisaPredictor):
    """No reuse: SAM re-encodes the image for every query."""

    def _encoded(self, image, key=None):
        self._cache = None
        return super()._encoded(image, key=None)


def bench_inference(size: str, llava: str, device: str, dtype: torch.dtype, naive: bool, repeat: int) -> dict:
    model, tokenizer, processor = new_model(size, llava, dtype=dtype, device=device)
    model.eval()
    cls = NaivePredictor if naive else LisaPredictor
    predictor = cls(model, tokenizer, processor, device, dtype)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    import tempfile

    import cv2

    path = Path(tempfile.mkdtemp()) / "bench.png"
    cv2.imwrite(str(path), image)  # a path is the cache key: ours reuses SAM's embedding, naive re-encodes
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    segment = timed(lambda: predictor.segment([(path, QUERY, True)]), device, repeat)
    new_tokens = 32

    def generate():
        prompt, _ = render([("<image>\n" + validation_question(QUERY, True).split("\n", 1)[1], None)])
        ids = torch.tensor([tokenize(tokenizer, prompt).input_ids], device=device)
        prepared, _ = predictor._encoded(image, key="bench")
        # A fixed number of new tokens: random weights rarely emit EOS, and both paths must do the same work.
        model.generate(prepared.clip[None].to(device, dtype), ids, eos_token_id=-1, max_new_tokens=new_tokens,
                       use_cache=not naive)
    chat = timed(generate, device, max(1, repeat // 2))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    free(model, predictor)
    return {"segment_s": segment, "chat_s": chat, "chat_tokens": new_tokens, "peak_gib": peak}


def _training_example(tokenizer, processor, sam_size: int, n_texts: int = 3) -> Example:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    sequences = []
    for k in range(n_texts):
        text, _ = render([(validation_question(f"{QUERY} ({k})", True), "Sure, it is [SEG].")])
        sequences.append(tokenize(tokenizer, text, with_labels=True))
    masks = np.zeros((n_texts, 480, 640), np.uint8)
    masks[:, 100:300, 200:450] = 1
    return Example("bench", prepare_image(image, processor, sam_size), sequences, masks)


def bench_training(size: str, llava: str, device: str, naive: bool, steps: int, batch_size: int) -> dict:
    dtype = torch.float32 if naive or not device.startswith("cuda") else torch.bfloat16
    model, tokenizer, processor = new_model(size, llava, dtype=dtype, device=device)
    torch.manual_seed(0)
    add_lora(model, LoraSettings())
    set_trainable(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    engine, label = None, "fp32 AdamW" if naive else f"LoRA {'bf16' if dtype == torch.bfloat16 else 'fp32'}"
    if not naive and device.startswith("cuda"):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            deepspeed = None
        if deepspeed is not None:
            from reasonseg.lisa.train import TrainConfig, _deepspeed_config

            for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                               "MASTER_PORT": "29611"}.items():
                os.environ.setdefault(key, value)
            deepspeed.init_distributed(dist_backend="nccl")
            config = TrainConfig(batch_size=batch_size, grad_accumulation=1, precision="bf16")
            engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           config=_deepspeed_config(config))
            label = "LoRA bf16 DeepSpeed ZeRO-2"
    example = _training_example(tokenizer, processor, model.config.sam.image_size)
    batch = collate([example] * batch_size, tokenizer.pad_token_id).to(device, dtype)

    def step():
        out = (engine or model)(batch)
        loss = lisa_loss(out.logits, out.labels, out.mask_logits, batch.masks)["loss"]
        if engine is not None:
            engine.backward(loss)
            engine.step()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, device, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    free(model, engine, optimizer)
    return {"samples_per_s": batch_size / seconds, "step_s": seconds, "engine": label, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "7b", "13b"])
    parser.add_argument("--llava", default="v1", choices=["v1", "v1.5"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions per inference measurement")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1, help="images per training step (3 texts each)")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    big = args.size != "tiny"
    repeat = args.repeat or (4 if big else 6)
    steps = args.train_steps or (4 if big else 6)
    fast_dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False  # the naive path is honest fp32

    ours = bench_inference(args.size, args.llava, args.device, fast_dtype, naive=False, repeat=repeat)
    naive = bench_inference(args.size, args.llava, args.device, torch.float32, naive=True, repeat=repeat)
    rows = [("predict, per query (teacher-forced)", ours["segment_s"], naive["segment_s"]),
            (f"chat, per query ({ours['chat_tokens']} new tokens)", ours["chat_s"], naive["chat_s"])]
    report = {"size": args.size, "llava": args.llava, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "inference": {"ours": ours, "naive": naive}}
    print(f"LISA {args.size} (LLaVA {args.llava}, random weights) on {report['device_name']}")
    print(f"{'measurement':<42}{'ours':>12}{'naive':>12}{'speed-up':>10}")
    for name, a, b in rows:
        print(f"{name:<42}{a * 1000:>10.1f}ms{b * 1000:>10.1f}ms{b / a:>9.2f}x")
    if args.device.startswith("cuda"):
        target = "meets" if ours["peak_gib"] < 20 else "misses"
        print(f"{'peak GPU memory, inference':<42}{ours['peak_gib']:>10.2f}GB{naive['peak_gib']:>10.2f}GB"
              f"  ({target} the 20 GB target)")
    if not args.skip_training:
        t_ours = bench_training(args.size, args.llava, args.device, False, steps, args.batch_size)
        t_naive = bench_training(args.size, args.llava, args.device, True, steps, args.batch_size)
        report["training"] = {"ours": t_ours, "naive": t_naive}
        print(f"{'training samples/s (' + t_ours['engine'] + ' vs fp32)':<42}{t_ours['samples_per_s']:>12.2f}"
              f"{t_naive['samples_per_s']:>12.2f}{t_ours['samples_per_s'] / t_naive['samples_per_s']:>9.2f}x")
        if args.device.startswith("cuda"):
            print(f"{'peak GPU memory, training':<42}{t_ours['peak_gib']:>10.2f}GB{t_naive['peak_gib']:>10.2f}GB")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
