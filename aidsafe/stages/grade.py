"""Stage `grade`: the auto-grader scores the refined CoT and response 1-5 on six metrics."""

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
from aidsafe.schemas import METRICS, Grades
from aidsafe.stages.common import as_list, now
from graphs.state import Usage

SCORE_FIELDS = [
    *((f"score_{m}", pa.int8()) for m in METRICS),
    *((f"rationale_{m}", pa.string()) for m in METRICS),
    ("refused", pa.bool_()),
    ("model_grader", pa.string()),
    ("usage_grade", USAGE),
]
COLUMNS = pa.schema([*SCORE_FIELDS, ("graded_at", pa.timestamp("us", tz="UTC"))])


async def grade(
    ctx: RowContext, prompt: str, thoughts: list[str], response: str
) -> tuple[dict[str, Any], Usage]:
    """Score one CoT and response; the row's text goes to the grader as delimited data only."""
    data: dict[str, Value] = {"prompt": prompt, "cot": thoughts, "response": response}
    model = ctx.models["grader"]
    try:
        grades, usage = await model.call(Grades, ctx.prompts["grade"].messages(**data))
    except Exception as exc:
        raise StageFailed("grade", exc) from exc
    columns: dict[str, Any] = {}
    for metric in METRICS:
        score = getattr(grades, metric)
        columns[f"score_{metric}"] = score.score
        columns[f"rationale_{metric}"] = score.rationale
    return columns | {
        "refused": grades.refused,
        "model_grader": model.model_name,
        "usage_grade": usage,
    }, usage


class GradeStage:
    name = "grade"
    output_subdir = "graded"
    prompt_names = ("grade",)
    columns = COLUMNS

    def roles(self, settings: Settings) -> list[str]:
        return ["grader"]

    def identity(self, settings: Settings) -> str:
        return settings.identity(self.roles(settings))

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        return read_stage_output(path)

    async def process(self, row: RowRef, ctx: RowContext) -> tuple[dict[str, Any], Usage]:
        thoughts = [str(t) for t in as_list(row.values["refined_cot"])]
        columns, usage = await grade(ctx, row.prompt, thoughts, row.values["refined_response"])
        return columns | {"graded_at": now()}, usage
