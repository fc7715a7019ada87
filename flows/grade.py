"""The `grade` flow: auto-grading of every refined partition, one task each."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.run import RunSummary
from flows.common import run_stage, stage_output


@flow(name="grade", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def grade(output: str = "out", options: Options | None = None, retry: bool = False) -> RunSummary:
    """Score the refined CoT and response 1-5 on six metrics: OUTPUT/refined/ -> OUTPUT/graded/."""
    return run_stage("grade", stage_output(output, "refine", "grade"), output, options, retry)
