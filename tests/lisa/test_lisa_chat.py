"""Interactive `reasonseg lisa chat` (no --query): a subprocess fed two questions on stdin, then end of input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import release, scratch, seg_answering_model  # noqa: E402


def test_interactive_chat_keeps_the_conversation_and_writes_pngs_per_seg():
    from reasonseg.lisa.infer import LisaPredictor

    model = seg_answering_model()
    image = sorted((release() / "val").glob("*.jpg"))[0]
    out = scratch("chat") / "out"
    exe = str(Path(sys.executable).with_name("reasonseg"))
    proc = subprocess.run([exe, "lisa", "chat", "--weights", str(model), "--image", str(image), "--out", str(out),
                           "--max-new-tokens", "6"], input="Where is the star?\nAnd the other shape?\n",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.count("LISA: [SEG]") == 2, proc.stdout
    transcript = json.loads((out / "chat.json").read_text())
    first, second = transcript["turns"]
    assert (first["question"], second["question"]) == ("Where is the star?", "And the other shape?")
    # The second question is asked after the first exchange, and the image appears once, in the first turn.
    assert first["prompt"] in second["prompt"] and "[SEG]</s>USER: And the other shape? ASSISTANT:" in \
        second["prompt"]
    assert second["prompt"].count("<image>") == 1 and first["prompt"].count("<image>") == 1
    # One mask and one overlay PNG per [SEG] answer, at the image's size.
    width, height = Image.open(image).size
    for k, turn in enumerate((first, second)):
        assert turn["files"] == [f"turn{k}_mask_0.png", f"turn{k}_overlay_0.png"]
        mask = np.array(Image.open(out / f"turn{k}_mask_0.png"))
        overlay = np.array(Image.open(out / f"turn{k}_overlay_0.png"))
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert overlay.shape == (height, width, 3)
    # The library, given the same history, answers the second question as the CLI did.
    predictor = LisaPredictor.from_pretrained(model)
    again = predictor.chat(image, "And the other shape?", [("<image>\nWhere is the star?", first["reply"])], 6)
    assert again.prompt == second["prompt"] and again.text == second["reply"]
    assert np.array_equal(again.masks[0], np.array(Image.open(out / "turn1_mask_0.png")) > 0)
    # The folder rule: the same --out again is refused; --overwrite replaces the earlier chat (its second turn's
    # PNGs too) and keeps the user's files.
    one = [exe, "lisa", "chat", "--weights", str(model), "--image", str(image), "--out", str(out), "--query", "Where?",
           "--max-new-tokens", "6"]
    refused = subprocess.run(one, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    (out / "notes.txt").write_text("mine")
    replaced = subprocess.run([*one, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert [t["question"] for t in json.loads((out / "chat.json").read_text())["turns"]] == ["Where?"]
    assert not (out / "turn1_mask_0.png").exists() and (out / "turn0_mask_0.png").is_file()
    assert (out / "notes.txt").read_text() == "mine"


def test_chat_defaults_to_the_originals_512_new_tokens():
    import torch

    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.infer import LisaPredictor
    from reasonseg.lisa.preprocess import ClipPreprocessor

    loaded = load_lisa(Path(__file__).parent / "fixtures" / "lisa-reference-tiny" / "ckpt")
    with torch.no_grad():
        loaded.model.llm.lm_head.weight.zero_()      # every step's argmax is id 0: never </s>
    predictor = LisaPredictor(loaded.model, loaded.tokenizer, ClipPreprocessor.from_pretrained(
        loaded.vision_tower_path))
    image = sorted((release() / "val").glob("*.jpg"))[0]
    reply = predictor.chat(image, "Describe the picture in detail.")
    assert reply.token_ids == [0] * 512 and reply.masks.shape[0] == 0 and reply.logits.shape[0] == 0


def test_chat_cli_speaks_the_llava_llama_2_template():
    model = seg_answering_model()
    image = sorted((release() / "val").glob("*.jpg"))[0]
    out = scratch("chat-llama2") / "out"
    exe = str(Path(sys.executable).with_name("reasonseg"))
    proc = subprocess.run([exe, "lisa", "chat", "--weights", str(model), "--image", str(image), "--out", str(out),
                           "--conv-type", "llava_llama_2", "--query", "Where is the star?"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompt = json.loads((out / "chat.json").read_text())["turns"][0]["prompt"]
    assert prompt.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert prompt.endswith("<im_start><image><im_end>\nWhere is the star? [/INST]")
