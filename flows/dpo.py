"""The `dpo` flow: preference pairs by belief augmentation over the kept rows, one task per partition."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.run import RunSummary
from flows.common import earlier_output, run_stage


@flow(name="dpo", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def dpo(output: str = "out", options: Options | None = None, retry: bool = False) -> RunSummary:
    """Ear-whisperer beliefs -> flawed (rejected) CoTs for the kept rows: OUTPUT/kept/ -> OUTPUT/dpo/."""
    kept = earlier_output(Path(output) / "kept", "report", "dpo")
    return run_stage("dpo", kept, output, options, retry)
