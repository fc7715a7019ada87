"""Shared output columns (token usage, the failures table) and how a stage's columns join its input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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


PART = "/"  # a part failure's stage: "<part>/<stage>", e.g. one trace configuration of a row


def is_part_failure(stage: str) -> bool:
    """A failure of a part of a row (the row itself reached the output), not of the row."""
    return PART in stage


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
    if set(carried.column_names) & set(schema.names):
        carried = carried.rename_columns(carried_names(carried.column_names, schema.names))
    new = pa.Table.from_pylist(list(added), schema=schema)
    for name in schema.names:
        carried = carried.append_column(schema.field(name), new.column(name))
    return carried


def carried_names(carried: Sequence[str], added: Sequence[str]) -> list[str]:
    """Input column names in the output: one that clashes with an added column becomes input_<name> (or
    input2_<name>, ... when that is taken too), so no two output columns share a name."""
    taken = set(carried) | set(added)
    names = []
    for name in carried:
        if name in added:
            candidates = (f"input{n if n > 1 else ''}_{name}" for n in range(1, len(taken) + 2))
            name = next(c for c in candidates if c not in taken)
            taken.add(name)
        names.append(name)
    return names


def failure_counts(path: Path) -> tuple[int, int]:
    """A failures table's (rows that failed, parts of output rows that failed)."""
    stages = pq.read_table(path, columns=["stage"]).column("stage").to_pylist()
    parts = sum(is_part_failure(str(s)) for s in stages)
    return len(stages) - parts, parts


def failures_table(failures: Sequence[Failure]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.Table.from_pylist([{**f.__dict__, "failed_at": now} for f in failures], schema=FAILURES)
