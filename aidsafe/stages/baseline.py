"""Stage `baseline` (LLM_ZS): one zero-shot call per prompt with the same policies, then the same grader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from aidsafe.config import Settings
from aidsafe.errors import StageFailed
from aidsafe.output import USAGE
from aidsafe.partitions import Partition, RowRef, read_partition
from aidsafe.runner import RowContext
from aidsafe.stages.common import now
from aidsafe.stages.grade import SCORE_FIELDS, grade
from graphs.schemas import Draft
from graphs.state import Usage, total

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


class BaselineStage:
    name = "baseline"
    output_subdir = "baseline"
    prompt_names = ("baseline", "grade")
    columns = COLUMNS

    def roles(self, settings: Settings) -> list[str]:
        return ["baseline", "grader"]

    def identity(self, settings: Settings) -> str:
        return settings.stage_identity(self.name, self.roles(settings))

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        return read_partition(path, taken_ids, max_chars)

    async def process(self, row: RowRef, ctx: RowContext) -> tuple[dict[str, Any], Usage]:
        model = ctx.models["baseline"]
        try:
            draft, usage = await model.call(Draft, ctx.prompts["baseline"].messages(prompt=row.prompt))
        except Exception as exc:
            raise StageFailed("baseline", exc) from exc
        grades, grade_usage = await grade(ctx, row.prompt, draft.thoughts, draft.response)
        columns = {
            "baseline_cot": draft.thoughts,
            "baseline_response": draft.response,
            "model_baseline": model.model_name,
            "usage_baseline": usage,
            "policy_set": ctx.policies.hash,
            "created_at": now(),
        }
        return columns | grades, total(usage, grade_usage)
