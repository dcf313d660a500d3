"""`reasonseg predict --method lisa` resumes an interrupted run; `lisa predict` under RANK/WORLD_SIZE predicts
every query exactly once across processes."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import release, scratch, tiny_model  # noqa: E402

from reasonseg.cli import app  # noqa: E402
from reasonseg.dataset import load_split  # noqa: E402
from reasonseg.errors import ReasonSegError  # noqa: E402
from reasonseg.lisa.infer import shard  # noqa: E402

runner = CliRunner()


def _predict(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["predict", "--method", "lisa", "--weights", str(tiny_model("v1")), str(data),
                               "--split", "val", "--out", str(out), "--batch-size", "1", *extra])


def test_predict_method_lisa_resumes_from_its_partial_file():
    folder = scratch("resume")
    data = shutil.copytree(release(), folder / "release")
    reference = folder / "reference.json"
    result = _predict(data, reference)
    assert result.exit_code == 0, result.output
    # Interrupt a run at its third image: an image whose JPEG stops before the scan data (the header, and so the
    # annotation's size check, still reads) fails when LISA reads the pixels, after two queries were written.
    third = load_split(data, "val")[2].image_path
    original = third.read_bytes()
    third.write_bytes(original[:original.find(b"\xff\xda")])
    out = folder / "preds.json"
    crashed = _predict(data, out)
    assert isinstance(crashed.exception, ReasonSegError) and "cannot read the image" in str(crashed.exception)
    partial = out.with_name(out.name + ".partial.jsonl")
    lines = partial.read_text().splitlines()
    assert not out.exists() and len(lines) == 3 and json.loads(lines[0])["method"] == "lisa"
    # Rerun with the same settings once the image is back: the two finished queries are taken from the file.
    third.write_bytes(original)
    result = _predict(data, out)
    assert result.exit_code == 0, result.output
    assert "wrote 4 predictions" in result.output and "(2 resumed from the partial file)" in result.output
    assert not partial.exists()
    doc, expected = json.loads(out.read_text()), json.loads(reference.read_text())
    assert doc["predictions"] == expected["predictions"]
    assert doc["meta"]["prompt_mode"] == "teacher-forced" and doc["meta"]["precision"] == "float32"
    # Other settings never mix with a partial file: a different prompt mode is refused, not resumed.
    third.write_bytes(original[:original.find(b"\xff\xda")])
    _predict(data, out)
    third.write_bytes(original)
    clash = _predict(data, out, "--set", "prompt_mode=generate")
    assert isinstance(clash.exception, ReasonSegError) and "other settings" in str(clash.exception)


def test_shards_cover_every_query_once():
    for n in range(0, 8):
        for world in (1, 2, 3, 5):
            parts = [shard(list(range(n)), rank, world) for rank in range(world)]
            assert sorted(x for p in parts for x in p) == list(range(n))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_predict_each_query_exactly_once():
    folder = scratch("ranks")
    exe = str(Path(sys.executable).with_name("reasonseg"))
    single = folder / "single.json"
    assert runner.invoke(app, ["lisa", "predict", str(release()), "--weights", str(tiny_model("v1")), "--split",
                               "test", "--out", str(single)]).exit_code == 0
    merged = folder / "merged.json"
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([exe, "lisa", "predict", str(release()), "--weights", str(tiny_model("v1")),
                                       "--split", "test", "--out", str(merged), "--batch-size", "1"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    assert "wrote 3 predictions" in outputs[0][0] and "wrote" not in outputs[1][0]  # rank 0 writes for both
    got = json.loads(merged.read_text())["predictions"]
    keys = [(p["id"], p["text_index"]) for p in got]
    assert len(keys) == len(set(keys)) == 3  # 3 queries over 2 ranks: no padding, no repeat
    assert got == json.loads(single.read_text())["predictions"]


def test_a_query_text_holding_a_control_token_fails_naming_its_sample():
    import dataclasses

    import pytest

    from reasonseg.errors import MethodError
    from reasonseg.lisa.infer import LisaPredictor, predict_split

    sample = load_split(release(), "val")[0]
    hostile = dataclasses.replace(sample, texts=["the thing left of [SEG] here"])
    predictor = LisaPredictor.from_pretrained(tiny_model("v1"))
    with pytest.raises(MethodError, match=f"{sample.id}.*control tokens"):
        predict_split(predictor, [hostile])
