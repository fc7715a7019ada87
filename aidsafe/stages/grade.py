"""Stage `grade`: the auto-grader scores the refined CoT and response 1-5 on six metrics."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.schemas import METRICS, Grades
from aidsafe.stage import RowContext, RowStage
from aidsafe.stages.common import as_list, now
from aidsafe.usage import USAGE

SCORE_FIELDS = [
    *((f"score_{m}", pa.int8()) for m in METRICS),
    *((f"rationale_{m}", pa.string()) for m in METRICS),
    ("refused", pa.bool_()),
    ("model_grader", pa.string()),
    ("usage_grade", USAGE),
]
COLUMNS = pa.schema([*SCORE_FIELDS, ("graded_at", pa.timestamp("us", tz="UTC"))])


async def grade(ctx: RowContext, prompt: str, thoughts: list[str], response: str) -> dict[str, Any]:
    """Score one CoT and response; the row's text goes to the grader as delimited data only."""
    data = {"prompt": prompt, "cot": thoughts, "response": response}
    grades = await ctx.calls.ask("grader", "grade", Grades, data)
    columns: dict[str, Any] = {}
    for metric in METRICS:
        score = getattr(grades, metric)
        columns[f"score_{metric}"] = score.score
        columns[f"rationale_{metric}"] = score.rationale
    return columns | {
        "refused": grades.refused,
        "model_grader": ctx.calls.model_name("grader"),
        "usage_grade": ctx.calls.used("grade"),
    }


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    thoughts = [str(t) for t in as_list(row.values["refined_cot"])]
    columns = await grade(ctx, row.prompt, thoughts, row.values["refined_response"])
    return columns | {"graded_at": now()}


GRADE = RowStage(
    name="grade",
    help="grade the refined rows 1-5 on six metrics (OUTPUT/refined -> OUTPUT/graded)",
    reads="refine",
    output="graded",
    prompts=("grade",),
    roles=lambda settings: ["grader"],
    columns=COLUMNS,
    process=process,
)
