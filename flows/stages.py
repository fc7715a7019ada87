"""One Prefect flow per pipeline step, derived from aidsafe.pipeline.PIPELINE.

A row stage's flow plans its partitions, fans out one task each (skipping the up-to-date ones) and writes
the stage summary; a whole-output step's flow runs one task and publishes its report as artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Flow, flow, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options, Settings
from aidsafe.embedded import live_settings
from aidsafe.errors import PartitionsFailed, TooManyFailedRows
from aidsafe.execute import PartitionJob, PartitionResult, is_done, skipped_result
from aidsafe.interrupt import rows_stop_on_interrupt
from aidsafe.lock import output_lock
from aidsafe.pipeline import PIPELINE, input_files, source_of
from aidsafe.plan import plan_jobs
from aidsafe.policies import PolicySet, load_policies
from aidsafe.preflight import check_context
from aidsafe.prompts import load_prompts
from aidsafe.stage import INPUT, RowStage, Step, StepResult, WholeStep
from aidsafe.summary import StageSummary, summarize
from aidsafe.task_runners import partition_runner, task_argument
from flows.tasks import partition_task, step_task


def publish_report(path: Path | None, name: str) -> None:
    """A standalone stage's Markdown report as the artifact `aidsafe-<name>` (none: no rows yet)."""
    if path is None:
        return
    markdown = path.read_text(encoding="utf-8")
    create_markdown_artifact(key=f"aidsafe-{name}", markdown=markdown, description=f"aidsafe {name}")
    get_run_logger().info("%s report: %s", name, path)


def retrying(retry: bool) -> bool:
    """Whether to redo failed rows: asked for, or this flow run is a rerun (`prefect flow-run retry`)."""
    return retry or flow_run.get_run_count() > 1


def _results(stage: RowStage, jobs: list[PartitionJob], futures: dict[str, Any]) -> list[PartitionResult]:
    """Every job's result in order: its task's (a failed task: a failed partition), or the counts of an
    up-to-date partition, which got no task."""
    results = []
    for job in jobs:
        future = futures.get(job.name)
        if future is None:
            results.append(skipped_result(stage, job))
        elif future.state.is_completed():
            results.append(future.result())
        else:
            error = str(future.state.message or future.state.name)
            results.append(PartitionResult(partition=job.name, status="failed", error=error))
    return results


def run_stage(
    stage: RowStage, source: str, output: str, options: Options | None, retry: bool,
    settings: Settings | None = None,
) -> StageSummary:  # fmt: skip
    """Run one stage over every partition of source; raise PartitionsFailed at the end if any failed.

    settings: resolved already (the eval flow's, with its target), else loaded from the options."""
    logger = get_run_logger()
    settings = settings or (options or Options()).load()
    policies = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policies.render())
    check_context(settings, prompts)
    output_dir = Path(output)
    paths = input_files(stage.name, output_dir, source if stage.reads == INPUT else None)
    jobs = plan_jobs(stage, paths, output_dir, settings, policies, prompts, retrying(retry))
    logger.info("%s: %d partition(s), policy set %s", stage.name, len(jobs), policies.hash)
    pending = [job for job in jobs if not is_done(stage, job)]
    if len(pending) < len(jobs):
        logger.info("%s: %d partition(s) unchanged since the last run, skipped", stage.name,
                    len(jobs) - len(pending))  # fmt: skip
    log = output_dir / "logs" / "embedded-server.log"
    # the settings' runner, not the flow's (Prefect's own annotation of map does not type-check)
    runner: Any = partition_runner(settings, needed=bool(pending))
    # exits in reverse: an interrupt stops the rows, the runner waits for its tasks, then the server stops
    with live_settings(settings, log, needed=bool(pending)) as live, runner, rows_stop_on_interrupt():
        task = partition_task.with_options(
            retries=settings.partition_retries, retry_delay_seconds=settings.partition_retry_delays
        )
        # an up-to-date partition gets no task: a rerun of a finished run costs the Prefect API nothing
        live_jobs = [j.model_copy(update={"settings": live}) for j in pending]
        jobs_argument = [task_argument(j, settings) for j in live_jobs]
        parameters = {"job": jobs_argument, "prompts": unmapped(task_argument(prompts, settings))}
        futures = runner.map(task, parameters) if pending else []
        wait(futures)
        # read while the runner runs: a cluster's futures die with its client
        results = _results(stage, jobs, {job.name: f for job, f in zip(pending, futures, strict=True)})
    return finish_stage(stage, source, output_dir, results, settings, policies)


def finish_stage(
    stage: RowStage, source: str, output_dir: Path, results: list[PartitionResult], settings: Settings,
    policies: PolicySet,
) -> StageSummary:  # fmt: skip
    """Write a stage's summary and its table artifact, then raise PartitionsFailed or TooManyFailedRows if
    it failed (shared by run_stage and the streaming run of flows/chain.py, which sums up at the end)."""
    summary = summarize(stage.name, source, output_dir, results, settings, policies)
    table = [p.model_dump(exclude_none=True) for p in summary.partitions]
    create_table_artifact(table, key=f"aidsafe-{stage.name}-summary", description=summary.describe())
    get_run_logger().info("%s; summary: %s", summary.describe(), summary.summary_path)
    if summary.failed_partitions:
        names = ", ".join(f"{p.partition} ({p.error})" for p in summary.failed_partitions)
        raise PartitionsFailed(f"{stage.name}: {len(summary.failed_partitions)} partition(s) failed: {names}")
    if summary.failed_fraction > settings.max_failed_fraction:
        raise TooManyFailedRows(
            f"{stage.name}: {summary.rows_failed} of {summary.rows_ok + summary.rows_failed} rows failed, "
            f"above max_failed_fraction {settings.max_failed_fraction:g}; see "
            f"{output_dir / 'failures' / stage.name}, fix the cause, then `aidsafe retry`"
        )
    return summary


def row_flow(stage: RowStage) -> Flow[..., StageSummary]:
    def run_row_stage(
        output: str = "out", input: str | None = None, options: Options | None = None, retry: bool = False
    ) -> StageSummary:
        with output_lock(output):
            return run_stage(stage, source_of(stage.name, Path(output), input), output, options, retry)

    # The partitions go through the runner of the run's settings (run_stage: aidsafe.task_runners), which are
    # resolved inside the flow; the flow's own runner is left with nothing to run.
    runner: Any = ThreadPoolTaskRunner(max_workers=1)  # Prefect's own annotation does not type-check
    return flow(name=stage.name, description=stage.help, task_runner=runner)(run_row_stage)


def whole_flow(step: WholeStep) -> Flow[..., StepResult]:
    def run_whole_step(output: str = "out", thresholds: dict[str, int] | None = None) -> StepResult:
        source_of(step.name, Path(output))  # what it reads must exist
        with output_lock(output):
            result = step_task(step.name, output, thresholds)  # None: the step's defaults
        if result.markdown:
            create_markdown_artifact(key=f"aidsafe-{step.name}", markdown=result.markdown,
                                     description=f"aidsafe {step.name}")  # fmt: skip
        if result.table:
            create_table_artifact(key=f"aidsafe-{step.name}-table", table=result.table,
                                  description=f"aidsafe {step.name}")  # fmt: skip
        get_run_logger().info("; ".join(result.lines))
        return result

    return flow(name=step.name, description=step.help)(run_whole_step)


def _flow_for(step: Step) -> Flow[..., Any]:
    return row_flow(step) if isinstance(step, RowStage) else whole_flow(step)


# name -> flow; row stages: (output, input, options, retry) -> StageSummary; whole steps: (output, thresholds)
# -> StepResult. Typed Any: Prefect's Flow[..., R] overloads do not type-check calls through a dict.
FLOWS: dict[str, Any] = {s.name: _flow_for(s) for s in PIPELINE}
