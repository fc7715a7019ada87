"""Stage `refine`: remove redundant, deceptive and policy-inconsistent thoughts; finalise the response."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from aidsafe.config import Settings
from aidsafe.errors import StageFailed
from aidsafe.output import USAGE
from aidsafe.partitions import Partition, RowRef, read_stage_output
from aidsafe.render import Value
from aidsafe.runner import RowContext
from aidsafe.schemas import Refinement
from aidsafe.stages.common import as_list, now
from graphs.state import Usage

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


def check_removals(thoughts: list[str]) -> Any:
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


class RefineStage:
    name = "refine"
    output_subdir = "refined"
    prompt_names = ("refine",)
    columns = COLUMNS

    def roles(self, settings: Settings) -> list[str]:
        return ["refiner"]

    def identity(self, settings: Settings) -> str:
        return settings.identity(self.roles(settings))

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        return read_stage_output(path)

    async def process(self, row: RowRef, ctx: RowContext) -> tuple[dict[str, Any], Usage]:
        values = row.values
        thoughts = [str(t) for t in as_list(values["cot"])]
        data: dict[str, Value] = {
            "prompt": row.prompt,
            "intents": as_list(values["intents"]),
            "history": as_list(values["deliberation_log"]),
            "cot": thoughts,
            "response": values["response"],
        }
        model = ctx.models["refiner"]
        try:
            result, usage = await model.call(
                Refinement, ctx.prompts["refine"].messages(**data), check_removals(thoughts)
            )
        except Exception as exc:
            raise StageFailed("refine", exc) from exc
        columns = apply_refinement(thoughts, result)
        return columns | {
            "model_refiner": model.model_name,
            "usage_refine": usage,
            "refined_at": now(),
        }, usage
