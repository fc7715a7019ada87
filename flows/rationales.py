"""The `rationales` flow: the rationales stage over every input partition (one task each, as every row stage),
then its report (aidsafe.rationale_report), also when partitions failed."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from aidsafe.config import Options
from aidsafe.lock import output_lock
from aidsafe.rationale_report import write_rationale_report
from aidsafe.stages.rationales import RATIONALES
from aidsafe.summary import StageSummary
from flows.stages import publish_report, retrying, run_stage


@flow(name="rationales")
def rationales(
    output: str = "out/rationales", input: str = "data/rationales", options: Options | None = None,
    retry: bool = False,
) -> list[str]:  # fmt: skip
    """Rationales for the answers of `input` (partitions with id, prompt and an answer) into OUTPUT."""
    with output_lock(output):
        try:
            summary: StageSummary = run_stage(RATIONALES, input, output, options, retrying(retry))
        finally:
            path = write_rationale_report(Path(output))
            publish_report(path, "rationales")
    return [*summary.lines(), f"report:   {path}"]
