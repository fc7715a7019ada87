"""Shared output columns (token usage, the failures table) and how a stage's columns join its input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef

USAGE = pa.struct([("calls", pa.int32()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64())])
FAILURES = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("row", pa.int64()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Failure:
    """A row (or a whole partition, row None) that did not reach the output, and why."""

    id: str | None
    partition: str
    row: int | None
    stage: str
    error_type: str
    message: str


def output_table(
    input_table: pa.Table, rows: Sequence[RowRef], added: Sequence[dict[str, Any]], schema: pa.Schema
) -> pa.Table:
    """Input columns carried through unchanged (same types) plus a stage's new columns."""
    carried = input_table.take(pa.array([r.index for r in rows], type=pa.int64()))
    clash = set(carried.column_names) & set(schema.names)
    if clash:
        carried = carried.rename_columns([f"input_{c}" if c in clash else c for c in carried.column_names])
    new = pa.Table.from_pylist(list(added), schema=schema)
    for name in schema.names:
        carried = carried.append_column(schema.field(name), new.column(name))
    return carried


def failures_table(failures: Sequence[Failure]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.Table.from_pylist([{**f.__dict__, "failed_at": now} for f in failures], schema=FAILURES)
