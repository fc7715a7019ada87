"""Stage `refine`: remove redundant, deceptive and policy-inconsistent thoughts; finalise the response."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.schemas import Refinement
from aidsafe.stage import RowContext, RowStage
from aidsafe.stages.common import as_list, now
from aidsafe.usage import USAGE
from graphs.protocol import Check

REMOVED = pa.struct([("number", pa.int32()), ("thought", pa.string()), ("reason", pa.string())])
COLUMNS = pa.schema(
    [
        ("refined_cot", pa.list_(pa.string())),
        ("refined_response", pa.string()),
        ("refinement_removed", pa.list_(REMOVED)),
        ("model_refiner", pa.string()),
        ("usage_refine", USAGE),
        ("refined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def check_removals(thoughts: list[str]) -> Check[Refinement]:
    """The row-specific check of a Refinement: thought numbers exist, once each, and one thought stays."""

    def check(result: Refinement) -> None:
        numbers = [r.number for r in result.removed]
        if any(n > len(thoughts) for n in numbers):
            raise ValueError(f"removed thought numbers must be between 1 and {len(thoughts)}")
        if len(set(numbers)) != len(numbers):
            raise ValueError("each thought may be removed only once")
        if len(numbers) >= len(thoughts):
            raise ValueError("at least one thought must be kept")

    return check


def apply_refinement(thoughts: list[str], result: Refinement) -> dict[str, Any]:
    """The refined CoT is the deliberated CoT minus the removed thoughts, in order."""
    reasons = {r.number: r.reason for r in result.removed}
    kept = [t for n, t in enumerate(thoughts, start=1) if n not in reasons]
    removed = [{"number": n, "thought": thoughts[n - 1], "reason": reasons[n]} for n in sorted(reasons)]
    return {"refined_cot": kept, "refined_response": result.response, "refinement_removed": removed}


async def refine(
    ctx: RowContext, prompt: str, intents: list[Any], history: list[Any], thoughts: list[str], response: str
) -> dict[str, Any]:
    """The refiner's pass over one deliberated CoT and response: the refined columns (no usage, no time)."""
    data = {"prompt": prompt, "intents": intents, "history": history, "cot": thoughts, "response": response}
    result = await ctx.calls.ask("refiner", "refine", Refinement, data, check_removals(thoughts))
    return apply_refinement(thoughts, result) | {"model_refiner": ctx.calls.model_name("refiner")}


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    values = row.values
    thoughts = [str(t) for t in as_list(values["cot"])]
    intents, history = as_list(values["intents"]), as_list(values["deliberation_log"])
    columns = await refine(ctx, row.prompt, intents, history, thoughts, values["response"])
    return columns | {"usage_refine": ctx.calls.used(), "refined_at": now()}


REFINE = RowStage(
    name="refine",
    help="refine the generated CoTs (OUTPUT/generated -> OUTPUT/refined)",
    reads="generate",
    output="refined",
    prompts=("refine",),
    roles=lambda settings: ["refiner"],
    columns=COLUMNS,
    process=process,
)
