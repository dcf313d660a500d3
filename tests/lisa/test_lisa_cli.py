import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import release, scratch, tiny_model  # noqa: E402

from reasonseg.cli import app  # noqa: E402

runner = CliRunner()


def test_init_predict_score_chat_from_the_command_line():
    out = scratch("cli")
    result = runner.invoke(app, ["lisa", "init", "--size", "tiny", "--llava", "v1.5", "--out", str(out / "m")])
    assert result.exit_code == 0, result.output
    assert (out / "m" / "config.json").exists()
    preds = out / "preds.json"
    result = runner.invoke(app, ["predict", "--method", "lisa", "--weights", str(tiny_model("v1")), str(release()),
                                 "--split", "val", "--out", str(preds)])
    assert result.exit_code == 0, result.output
    doc = json.loads(preds.read_text())
    assert doc["format"] == "reasonseg-predictions" and len(doc["predictions"]) == 4
    result = runner.invoke(app, ["score", str(release()), str(preds), "--split", "val", "--out",
                                 str(out / "results.json")])
    assert result.exit_code == 0, result.output
    batched = out / "batched.json"
    result = runner.invoke(app, ["lisa", "predict", str(release()), "--weights", str(tiny_model("v1")), "--split",
                                 "val", "--out", str(batched), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(batched.read_text())["predictions"] == doc["predictions"]  # batching changes nothing
    image = next((release() / "val").glob("*.jpg"))
    result = runner.invoke(app, ["lisa", "chat", "--weights", str(tiny_model("v1")), "--image", str(image),
                                 "--query", "Please segment the star.", "--out", str(out / "chat"),
                                 "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "LISA:" in result.output


def _run(*args):
    exe = str(Path(sys.executable).with_name("reasonseg"))
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True)


def _user_error(proc, text):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], proc.stderr


def test_user_errors_exit_2_with_one_line():
    # --model is the hidden old name of --weights: still accepted
    _user_error(_run("lisa", "chat", "--model", tiny_model("v1"), "--image", "x.jpg", "--query", "q",
                     "--load-in-8bit"), "needs a CUDA")
    _user_error(_run("lisa", "chat", "--image", "x.jpg", "--query", "q"), "needs --weights")
    _user_error(_run("lisa", "chat", "--weights", tiny_model("v1"), "--image", "x.jpg", "--query", "q",
                     "--conv-type", "vicuna"), "'vicuna' is not one of 'llava_v1', 'llava_llama_2'")
    _user_error(_run("predict", "--method", "lisa", release(), "--split", "val", "--out", "p.json"), "--weights")
    _user_error(_run("lisa", "init", "--size", "huge", "--out", scratch("bad") / "m"), "'huge' is not one of")
    broken = scratch("broken")
    (broken / "config.json").write_text("{}")
    _user_error(_run("lisa", "predict", release(), "--weights", broken, "--out", broken / "p.json"),
                "vision tower")


def test_every_lisa_command_that_takes_a_model_takes_weights_and_defaults_by_device():
    from reasonseg.commands.lisa import resolve_device

    for command in ("chat", "predict", "eval"):
        result = runner.invoke(app, ["lisa", command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "--weights" in result.output, result.output
        assert "--model" not in result.output
    chat_help = runner.invoke(app, ["lisa", "chat", "--help"], env={"COLUMNS": "200"}).output
    assert "512" in chat_help and "llava_llama_2" in chat_help
    assert resolve_device("cpu", None) == ("cpu", "fp32") and resolve_device("cuda", None) == ("cuda", "bf16")
    assert resolve_device("cuda", "fp16") == ("cuda", "fp16")


def test_model_commands_print_no_deepspeed_accelerator_notice():
    # DeepSpeed (imported by transformers/accelerate when installed) logged "Setting accelerator to CPU ..." on
    # stdout from every model command on a machine without a GPU.
    import importlib.util

    import torch

    if importlib.util.find_spec("deepspeed") is None or torch.cuda.is_available():
        return  # nothing to see: the notice only comes from DeepSpeed on a machine without CUDA
    exe = str(Path(sys.executable).with_name("reasonseg"))
    out = scratch("ds-notice")
    for args in (["lisa", "init", "--out", str(out / "m")],
                 ["predict", "--method", "lisa", "--weights", str(tiny_model("v1")), str(release()), "--split",
                  "val", "--out", str(out / "p.json")]):
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600,
                              env={k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"})
        assert done.returncode == 0, done.stderr
        assert "Setting accelerator" not in done.stdout + done.stderr, args
