"""Rows of a Parquet or JSONL file as plain values, with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.errors import InputError


def read_records(path: Path) -> list[dict[str, Any]]:
    """A .parquet file's rows, or a JSONL file's (blank lines skipped; each line a JSON object, numbered
    from 1 in errors)."""
    if path.suffix == ".parquet":
        try:
            return list(pq.read_table(path).to_pylist())
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(path, f"not a readable Parquet file ({exc})") from exc
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, f"not valid JSON ({exc.msg})", row=number) from exc
            if not isinstance(record, dict):
                raise InputError(path, "not a JSON object", row=number)
            records.append(record)
    return records
