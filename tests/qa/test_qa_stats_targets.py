"""`qa stats` counts a target once however its source phrases it ("car antenna" / "the antenna of the car")."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from reasonseg.builders.qa.stats import target_key
from reasonseg.masks import encode_rle

EXE = str(Path(sys.executable).with_name("reasonseg"))


def test_part_phrasings_are_one_target():
    assert target_key("the antenna of the car") == target_key("car antenna") == "car antenna"
    assert target_key("The Dog") == target_key("dog") == "dog"
    assert target_key("of") == "of" and target_key("cup of") == "cup of"     # no object or part: left as is
    assert target_key("the wheel of a bus") != target_key("car wheel")


def test_qa_stats_counts_phrasings_as_one_target(tmp_path):
    mask = encode_rle(np.ones((4, 4), np.uint8))
    records = [("paco", ["car antenna"]), ("pascal_part", ["the antenna of the car"]), ("ade20k", ["the Car"]),
               ("ade20k", ["car"])]
    lines = [json.dumps({"id": f"r{n}", "source": source, "image": "x.jpg", "targets": targets,
                         "conversations": [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "[SEG]"}],
                         "masks": [mask], "templates": [["short:0", "answer:0"]]})
             for n, (source, targets) in enumerate(records)]
    (tmp_path / "qa.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([EXE, "qa", "stats", str(tmp_path), "--top", "5"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert sorted(map(tuple, stats["top_targets"])) == [("car", 2), ("car antenna", 2)]
    assert stats["distinct_targets"] == 2
