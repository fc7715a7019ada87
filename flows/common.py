"""Orchestration shared by the stage flows: plan the partitions, fan out one task each, summarise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import unmapped
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from aidsafe.config import Options
from aidsafe.embedded import live_settings
from aidsafe.errors import AidsafeError
from aidsafe.partitions import discover
from aidsafe.policies import load_policies
from aidsafe.prompts import load_prompts
from aidsafe.run import RunSummary, plan_jobs, summarize
from aidsafe.runner import PartitionResult, is_done
from aidsafe.stages import STAGES
from flows.tasks import partition_task


class PartitionsFailed(AidsafeError):
    """Some partitions could not be processed; the others finished."""


class StagesFailed(AidsafeError):
    """Some stages failed (their other partitions finished and were carried on)."""


def retrying(retry: bool) -> bool:
    """Whether to redo failed rows: asked for, or this flow run is a rerun (`prefect flow-run retry`)."""
    return retry or flow_run.get_run_count() > 1


def run_stage(
    stage_name: str, source: str | Path, output: str, options: Options | None, retry: bool = False
) -> RunSummary:
    """Run one stage over every partition of source; raise PartitionsFailed at the end if any failed.

    retry: also redo the failed rows of partitions that are otherwise up to date (always done when this
    flow run is a rerun of a failed one).
    """
    logger = get_run_logger()
    stage = STAGES[stage_name]
    settings = (options or Options()).load()
    policies = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policies.render())
    output_dir = Path(output)
    jobs = plan_jobs(stage, discover(source), output_dir, settings, policies, prompts, retrying(retry))
    logger.info("%s: %d partition(s), policy set %s", stage_name, len(jobs), policies.hash)
    pending = [job for job in jobs if not is_done(stage, job)]
    with live_settings(settings, output_dir / "logs" / "embedded-server.log", needed=bool(pending)) as live:
        task = partition_task.with_options(
            retries=settings.partition_retries, retry_delay_seconds=settings.partition_retry_delays
        )
        futures = task.map([j.model_copy(update={"settings": live}) for j in jobs], unmapped(prompts))
        wait(futures)
    results = [
        future.result()
        if future.state.is_completed()
        else PartitionResult(
            partition=job.name, status="failed", error=str(future.state.message or future.state.name)
        )
        for job, future in zip(jobs, futures, strict=True)
    ]
    summary = summarize(stage_name, str(source), output_dir, results, settings, policies)
    table = [p.model_dump(exclude_none=True) for p in summary.partitions]
    create_table_artifact(table, key=f"aidsafe-{stage_name}-summary", description=summary.describe())
    logger.info("%s; summary: %s", summary.describe(), summary.summary_path)
    if summary.failed_partitions:
        names = ", ".join(f"{p.partition} ({p.error})" for p in summary.failed_partitions)
        raise PartitionsFailed(f"{stage_name}: {len(summary.failed_partitions)} partition(s) failed: {names}")
    return summary


def earlier_output(path: Path, made_by: str, needs: str) -> Path:
    """What an earlier command wrote; a clear error when it has not run."""
    if not path.is_dir():
        raise AidsafeError(f"{path}: not found; run `aidsafe {made_by}` before `aidsafe {needs}`")
    return path


def stage_output(output: str | Path, stage_name: str, needs: str) -> Path:
    """Where an earlier stage wrote its partitions."""
    return earlier_output(Path(output) / STAGES[stage_name].output_subdir, stage_name, needs)


def raise_if_failed(states: dict[str, State[Any]]) -> None:
    """Log and raise the stages (subflow runs) that did not complete; the others' work stays."""
    failed = {name: state for name, state in states.items() if not state.is_completed()}
    for name, state in failed.items():
        get_run_logger().error("%s failed: %s", name, state.message)
    if failed:
        raise StagesFailed("; ".join(f"{name}: {state.message}" for name, state in failed.items()))
