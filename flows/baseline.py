"""The `baseline` flow (LLM_ZS): a zero-shot CoT and response per prompt, graded by the same grader."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.run import RunSummary
from flows.common import run_stage


@flow(name="baseline", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def baseline(
    input: str = "data/sample", output: str = "out", options: Options | None = None, retry: bool = False
) -> RunSummary:
    """One zero-shot call with the same policies per prompt, then the grader: OUTPUT/baseline/."""
    return run_stage("baseline", input, output, options, retry)
