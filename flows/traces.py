"""The `traces` flow: the traces stage over every input partition (one task each, as every row stage), with
each configuration's drafter and agents as roles of their own (aidsafe.trace_recipe.trace_settings), then
its report (aidsafe.trace_report), also when partitions failed."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from aidsafe.config import Options
from aidsafe.lock import output_lock
from aidsafe.stages.traces import TRACES
from aidsafe.summary import StageSummary
from aidsafe.trace_recipe import trace_settings
from aidsafe.trace_report import write_trace_report
from flows.stages import publish_report, retrying, run_stage


@flow(name="traces")
def traces(
    output: str = "out/traces",
    input: str = "data/sample",
    options: Options | None = None,
    retry: bool = False,
) -> list[str]:
    """K traces per prompt of `input` (partitions with id and prompt) into OUTPUT/traces."""
    settings = trace_settings((options or Options()).load())
    with output_lock(output):
        try:
            summary: StageSummary = run_stage(TRACES, input, output, options, retrying(retry), settings)
        finally:
            path = write_trace_report(Path(output))
            publish_report(path, "traces")
    return [*summary.lines(), f"report:   {path}"]
