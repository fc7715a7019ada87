"""The `generate` flow: AIDSAFE stages 1-3 over every input partition, one task each."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.run import RunSummary
from flows.common import run_stage


@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def generate(
    input: str = "data/sample", output: str = "out", options: Options | None = None, retry: bool = False
) -> RunSummary:
    """Intents, first draft and multi-agent deliberation for every prompt: OUTPUT/generated/."""
    return run_stage("generate", input, output, options, retry)
