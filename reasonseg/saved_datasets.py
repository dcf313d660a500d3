"""The files of `datasets`' `save_to_disk` layout, read with pyarrow alone (the `hub` extra, imported on use).

A saved DatasetDict is `dataset_dict.json` plus one folder per split; a saved Dataset is `state.json` plus its
`data-NNNNN-of-NNNNN.arrow` files (Arrow IPC streams) in one folder. Both the published form
(`reasonseg.published`) and the Hub mirror (`reasonseg.hub_mirror`) may come in it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

ARROW_FILE = re.compile(r"^data-\d{5}-of-\d{5}\.arrow$")
ONE_DATASET = ""    # the split name of a saved Dataset (not a DatasetDict)


def saved_splits(root: Path) -> dict[str, list[Path]]:
    """{split name as saved: its Arrow files}; {"": files} for one saved Dataset; empty when neither."""
    if (root / "state.json").is_file():
        return {ONE_DATASET: _arrow_files(root)}
    try:
        names = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: _arrow_files(root / name) for name in names if isinstance(name, str) and re.fullmatch(r"\w+", name)
            and (root / name / "state.json").is_file()}


def _arrow_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ARROW_FILE.match(p.name) and p.is_file())


def arrow_batches(path: Path, columns: list[str]) -> Iterator:
    """The record batches of a saved Arrow file, memory-mapped (a batch is decoded only when its values are
    converted), each reduced to `columns`; the caller checks that they exist (`arrow_schema`)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield batch.select(columns)


def arrow_schema(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).schema
