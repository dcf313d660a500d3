"""The `lisa chat` loop: ask about an image, write each reply's masks and overlays as PNGs, keep a transcript."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ReasonSegError

TRANSCRIPT = "chat.json"
CHAT_OUTPUTS = (TRANSCRIPT, "turn*_mask_*.png", "turn*_overlay_*.png")   # what an earlier chat left, for --overwrite


def overlay(image_rgb: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    out = image_rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)


def write_masks(out: Path, stem: str, image_rgb: np.ndarray, masks: np.ndarray) -> list[Path]:
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, mask in enumerate(masks):
        for name, pixels in ((f"{stem}_mask_{k}.png", mask.astype(np.uint8) * 255),
                             (f"{stem}_overlay_{k}.png", cv2.cvtColor(overlay(image_rgb, mask), cv2.COLOR_RGB2BGR))):
            tmp = out / f".{name}.tmp.png"
            cv2.imwrite(str(tmp), pixels)
            tmp.replace(out / name)
            written.append(out / name)
    return written


def _write_transcript(out: Path, doc: dict) -> None:
    from ..dataset import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TRANSCRIPT, json.dumps(doc, indent=1) + "\n")


def run_chat(model: Path, image: Path | None, query: str | None, out: Path, device: str, precision: str,
             load_in: int | None, max_new_tokens: int, echo: Callable[[str], None],
             ask: Callable[[str], str | None], conv_type: str = "llava_v1", vision_tower: str | None = None,
             overwrite: bool = False) -> None:
    """One question with --query, else a loop that keeps the conversation (an empty question, `exit` or end of
    input (`ask` returns None) ends it; `new` forgets it). After every reply `out/chat.json` holds the turns so far:
    question, reply, the prompt the model saw and the PNGs written for each [SEG]. A non-empty `out` needs
    `overwrite`, which removes an earlier chat's files only; the folder is made by the first reply."""
    from ..outputs import check_output_dir, clear_outputs
    from .infer import LisaPredictor
    from .preprocess import read_rgb

    clear_outputs(check_output_dir(out, overwrite), CHAT_OUTPUTS)

    predictor = LisaPredictor.from_pretrained(model, device=device, precision=precision, load_in=load_in,
                                              vision_tower=vision_tower, conv_type=conv_type)
    if image is None:
        if query is not None:
            raise ReasonSegError("--query needs --image")
        answer = ask("image path")
        if not answer:
            return
        image = Path(answer)
    rgb = read_rgb(image)
    history: list[tuple[str, str]] = []
    transcript = {"model": str(model), "image": str(image), "turns": []}
    turn = 0
    while True:
        question = query if query is not None else ask("you")
        if question is None or not question.strip() or question.strip() in ("exit", "quit"):
            return
        if question.strip() == "new":
            history = []
            continue
        reply = predictor.chat(rgb, question, history, max_new_tokens)
        history.append((question if history else "<image>\n" + question, reply.text))
        echo(f"LISA: {reply.text}")
        written = write_masks(out, f"turn{turn}", rgb, reply.masks)
        for path in written:
            echo(f"wrote {path}")
        transcript["turns"].append({"question": question, "reply": reply.text, "prompt": reply.prompt,
                                    "files": [p.name for p in written]})
        _write_transcript(out, transcript)
        turn += 1
        if query is not None:
            return
