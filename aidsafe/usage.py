"""Token usage accounting: one Usage per model call, summed per stage, row, partition and run."""

from __future__ import annotations

from typing import TypedDict

import pyarrow as pa


class Usage(TypedDict):
    """Token usage of some model calls."""

    calls: int
    input_tokens: int
    output_tokens: int


NO_USAGE = Usage(calls=0, input_tokens=0, output_tokens=0)
# The Parquet type of a Usage column.
USAGE = pa.struct([("calls", pa.int32()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64())])


def total(*usages: Usage) -> Usage:
    """The sum of some token usages."""
    return Usage(
        calls=sum(u["calls"] for u in usages),
        input_tokens=sum(u["input_tokens"] for u in usages),
        output_tokens=sum(u["output_tokens"] for u in usages),
    )
