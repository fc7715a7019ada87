"""The `report` flow: the comparison report as files and as Prefect artifacts, and the kept rows."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from aidsafe.report import ReportData, build_report, check_thresholds, metrics_table, render_markdown
from aidsafe.report_files import load_results, write_kept, write_report_files


@task(name="build-report", cache_policy=NO_CACHE)
def build_report_task(output: str, thresholds: dict[str, int]) -> ReportData:
    graded, baseline, failures = load_results(Path(output))
    return build_report(graded, baseline, failures, thresholds)


@task(name="write-kept", cache_policy=NO_CACHE)
def write_kept_task(output: str, thresholds: dict[str, int]) -> int:
    return write_kept(Path(output), thresholds)


@flow(name="report")
def report(output: str = "out", thresholds: dict[str, int] | None = None) -> str:
    """Mean scores AIDSAFE vs LLM_ZS, distributions, deliberation, refinement, failures, refusal rates."""
    limits = check_thresholds(thresholds or {})
    data = build_report_task(output, limits)
    kept = write_kept_task(output, limits)
    path = write_report_files(data, Path(output), limits)
    create_markdown_artifact(
        key="aidsafe-report", markdown=render_markdown(data, []), description="aidsafe report"
    )
    create_table_artifact(
        key="aidsafe-scores", table=metrics_table(data), description="Mean scores, AIDSAFE vs LLM_ZS"
    )
    get_run_logger().info("report: %s; kept rows: %d in %s", path, kept, Path(output) / "kept")
    return str(path)
