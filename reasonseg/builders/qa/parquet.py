"""The Parquet copy of `qa.jsonl`: same records and fields, typed columns, written in batches (memory stays flat)."""
from __future__ import annotations

import json
import os
from pathlib import Path

BATCH = 2000


def qa_schema():
    import pyarrow as pa

    rle = pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("image", pa.string()),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("masks", pa.list_(rle)), ("ignore", rle),
        ("targets", pa.list_(pa.string())), ("templates", pa.list_(pa.list_(pa.string()))),
    ])


def write_parquet(jsonl: Path, out: Path) -> Path:
    """Convert a QA JSONL file to Parquet, via a temp file renamed at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = qa_schema()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer, open(jsonl, encoding="utf-8") as fh:
            batch: list[dict] = []
            for line in fh:
                if line.strip():
                    batch.append(json.loads(line))
                if len(batch) >= BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
