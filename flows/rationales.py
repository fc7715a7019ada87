"""The `rationales` flow: the rationales stage over every input partition (one task each, as every row stage),
then its report (aidsafe.rationale_report), also when partitions failed."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from aidsafe.config import Options
from aidsafe.lock import output_lock
from aidsafe.rationale_report import write_rationale_report
from aidsafe.stages.rationales import RATIONALES
from aidsafe.summary import StageSummary
from flows.stages import retrying, run_stage


def publish(path: Path | None) -> None:
    if path is None:
        return
    markdown = path.read_text(encoding="utf-8")
    create_markdown_artifact(key="aidsafe-rationales", markdown=markdown, description="aidsafe rationales")
    get_run_logger().info("rationales report: %s", path)


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
            publish(path)
    return [*summary.lines(), f"report:   {path}"]
