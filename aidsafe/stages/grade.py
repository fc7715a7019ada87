"""Stage `grade`: the auto-grader scores the refined CoT and response 1-5 on six metrics.

The grader sees the user prompt, the intents, the policies (in the shared preamble), the CoT and the response,
and scores by the rubric of policies/prompts/rubric.toml. With grader_samples N > 1 it grades every row N
times: score_<metric> is then the mean rounded half up, score_mean_<metric> the mean and
score_spread_<metric> the spread (highest minus lowest score; null with one grade).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.schemas import METRICS, Grades
from aidsafe.stage import RowContext, RowStage
from aidsafe.stages.common import as_list, now
from aidsafe.usage import USAGE
from graphs.protocol import Value

SCORE_FIELDS = [
    *((f"score_{m}", pa.int8()) for m in METRICS),
    *((f"score_mean_{m}", pa.float64()) for m in METRICS),
    *((f"score_spread_{m}", pa.int8()) for m in METRICS),
    *((f"rationale_{m}", pa.string()) for m in METRICS),
    ("refused", pa.bool_()),
    ("model_grader", pa.string()),
    ("usage_grade", USAGE),
]
COLUMNS = pa.schema([*SCORE_FIELDS, ("graded_at", pa.timestamp("us", tz="UTC"))])


def combine(samples: Sequence[Grades]) -> dict[str, Any]:
    """The score columns of one or more grades of the same row.

    Per metric: the mean rounded half up, the mean, the spread (None for one grade) and the rationale of
    the first grade whose score is closest to the rounded mean; refused when at least half the grades say so.
    """
    columns: dict[str, Any] = {}
    for metric in METRICS:
        scores = [getattr(sample, metric) for sample in samples]
        values = [score.score for score in scores]
        mean = sum(values) / len(values)
        rounded = int(mean + 0.5)
        columns[f"score_{metric}"] = rounded
        columns[f"score_mean_{metric}"] = mean
        columns[f"score_spread_{metric}"] = max(values) - min(values) if len(values) > 1 else None
        columns[f"rationale_{metric}"] = min(scores, key=lambda s: abs(s.score - rounded)).rationale
    refusals = sum(sample.refused for sample in samples)
    return columns | {"refused": 2 * refusals >= len(samples)}


async def grade(
    ctx: RowContext,
    prompt: str,
    thoughts: list[str],
    response: str,
    intents: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Score one CoT and response (grader_samples times); the row's text goes to the grader as delimited data
    only. Without intents (the baseline) the grader is told none were listed."""
    data: dict[str, Value] = {
        "prompt": prompt,
        "intents": list(intents),
        "cot": thoughts,
        "response": response,
    }
    samples = [
        await ctx.calls.ask("grader", "grade", Grades, data) for _ in range(ctx.settings.grader_samples)
    ]
    return combine(samples) | {
        "model_grader": ctx.calls.model_name("grader"),
        "usage_grade": ctx.calls.used("grade"),
    }


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    thoughts = [str(t) for t in as_list(row.values["refined_cot"])]
    intents = as_list(row.values.get("intents"))
    columns = await grade(ctx, row.prompt, thoughts, row.values["refined_response"], intents)
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
