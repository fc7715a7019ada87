"""The `refine` flow: refinement of every generated partition, one task each."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.run import RunSummary
from flows.common import run_stage, stage_output


@flow(name="refine", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def refine(output: str = "out", options: Options | None = None, retry: bool = False) -> RunSummary:
    """Remove redundant, deceptive and policy-inconsistent thoughts: OUTPUT/generated/ -> OUTPUT/refined/."""
    return run_stage("refine", stage_output(output, "generate", "refine"), output, options, retry)
