"""The columns aidsafe writes: generated rows and the failures table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef

USAGE = pa.struct([("calls", pa.int32()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64())])
STAGE_USAGE = pa.struct([("intent", USAGE), ("draft", USAGE), ("deliberation", USAGE)])
TURN = pa.struct(
    [
        ("turn", pa.int32()),
        ("agent", pa.string()),
        ("model", pa.string()),
        ("verdict", pa.string()),
        ("feedback", pa.string()),
        ("cot_changed", pa.bool_()),
        ("response_changed", pa.bool_()),
    ]
)
MODELS = pa.struct([("intent", pa.string()), ("drafter", pa.string()), ("agents", pa.list_(pa.string()))])
GENERATED = pa.schema(
    [
        ("intents", pa.list_(pa.struct([("description", pa.string()), ("kind", pa.string())]))),
        ("initial_cot", pa.list_(pa.string())),
        ("initial_response", pa.string()),
        ("deliberation_log", pa.list_(TURN)),
        ("cot", pa.list_(pa.string())),
        ("response", pa.string()),
        ("stop_reason", pa.string()),
        ("rounds", pa.int32()),
        ("models", MODELS),
        ("policy_set", pa.string()),
        ("usage", STAGE_USAGE),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
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
_ZERO = {"calls": 0, "input_tokens": 0, "output_tokens": 0}


@dataclass(frozen=True)
class Failure:
    """A row (or a whole partition, row None) that did not reach the output, and why."""

    id: str | None
    partition: str
    row: int | None
    stage: str
    error_type: str
    message: str


def generated_row(state: Mapping[str, Any], models: Mapping[str, Any], policy_set: str) -> dict[str, Any]:
    """The generated columns of one row from its final graph state."""
    usage = state.get("usage", {})
    return {
        "intents": state["intents"],
        "initial_cot": state["initial_cot"],
        "initial_response": state["initial_response"],
        "deliberation_log": state.get("deliberation_log", []),
        "cot": state["cot"],
        "response": state["response"],
        "stop_reason": state["stop_reason"],
        "rounds": state["rounds"],
        "models": models,
        "policy_set": policy_set,
        "usage": {stage: usage.get(stage, _ZERO) for stage in ("intent", "draft", "deliberation")},
        "created_at": datetime.now(UTC),
    }


def output_table(
    input_table: pa.Table, rows: Sequence[RowRef], generated: Sequence[dict[str, Any]]
) -> pa.Table:
    """Input columns carried through unchanged (same types) plus the generated columns."""
    carried = input_table.take(pa.array([r.index for r in rows], type=pa.int64()))
    clash = set(carried.column_names) & set(GENERATED.names)
    if clash:
        carried = carried.rename_columns([f"input_{c}" if c in clash else c for c in carried.column_names])
    new = pa.Table.from_pylist(list(generated), schema=GENERATED)
    for name in GENERATED.names:
        carried = carried.append_column(GENERATED.field(name), new.column(name))
    return carried


def failures_table(failures: Sequence[Failure]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.Table.from_pylist([{**f.__dict__, "failed_at": now} for f in failures], schema=FAILURES)
