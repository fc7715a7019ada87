"""Stage `baseline` (LLM_ZS): one zero-shot call per prompt with the same policies, then the same grader."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.stage import INPUT, RowContext, RowStage
from aidsafe.stages.common import now
from aidsafe.stages.grade import SCORE_FIELDS, grade
from aidsafe.usage import USAGE
from graphs.schemas import Draft

COLUMNS = pa.schema(
    [
        ("baseline_cot", pa.list_(pa.string())),
        ("baseline_response", pa.string()),
        ("model_baseline", pa.string()),
        ("usage_baseline", USAGE),
        *SCORE_FIELDS,
        ("policy_set", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    draft = await ctx.calls.ask("baseline", "baseline", Draft, {"prompt": row.prompt})
    grades = await grade(ctx, row.prompt, draft.thoughts, draft.response)
    return grades | {
        "baseline_cot": draft.thoughts,
        "baseline_response": draft.response,
        "model_baseline": ctx.calls.model_name("baseline"),
        "usage_baseline": ctx.calls.used("baseline"),
        "policy_set": ctx.policies.hash,
        "created_at": now(),
    }


BASELINE = RowStage(
    name="baseline",
    help="zero-shot baseline (LLM_ZS), graded by the same grader (INPUT -> OUTPUT/baseline)",
    reads=INPUT,
    output="baseline",
    prompts=("baseline", "grade"),
    roles=lambda settings: ["baseline", "grader"],
    columns=COLUMNS,
    process=process,
    in_run="optional",
)
