"""Prefect tasks: one per partition, small and typed; retried only on transient errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from aidsafe.errors import is_transient
from aidsafe.execute import PartitionJob, PartitionResult, is_done, run_partition, skipped_result
from aidsafe.interrupt import STOPPING
from aidsafe.pipeline import row_stage, step
from aidsafe.progress import publish
from aidsafe.prompts import PromptSet
from aidsafe.stage import StepResult, WholeStep


def retry_transient(task: object, task_run: object, state: Any) -> bool:
    """Retry a task only when it failed on a transient error (an outage, not a bad row or a bug), and
    never once the command is being interrupted (its servers are stopping: every call would fail)."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc) and not STOPPING.is_set()
    return False


@task(  # retries and their delays come from the settings (flows/stages.py: run_stage)
    name="partition",
    task_run_name="{job.stage}-{job.name}",
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def partition_task(job: PartitionJob, prompts: PromptSet) -> PartitionResult:
    """Run one stage over one partition, unless its output is already up to date."""
    return run_job(job, prompts)


def run_job(job: PartitionJob, prompts: PromptSet) -> PartitionResult:
    """The body of every partition task (this module's, and the streaming run's in flows/chain.py, which
    plans its job first): skip an up-to-date partition, else run it with a progress artifact."""
    logger = get_run_logger()
    stage = row_stage(job.stage)
    if is_done(stage, job):
        logger.info("%s %s: unchanged since the last run, skipped", job.stage, job.name)
        return skipped_result(stage, job)

    progress_id = create_progress_artifact(0.0, description=f"{job.stage} {job.name}: rows done (%)")

    def progress(finished: int, total: int) -> None:
        publish(job.stage, job.name, finished, total)
        if finished == total or (finished and finished % max(1, total // 10) == 0):
            logger.info("%s %s: %d/%d rows", job.stage, job.name, finished, total)
            # called from the rows' event loop: force the synchronous client
            percent = 100.0 * finished / total if total else 100.0
            update_progress_artifact(progress_id, percent, _sync=True)  # type: ignore[call-arg,arg-type]

    result = run_partition(stage, job, prompts, progress)
    logger.info("%s %s: %s, %d rows ok, %d failed", job.stage, job.name, result.status, result.rows_ok,
                result.rows_failed)  # fmt: skip
    return result


@task(name="step", task_run_name="{name}", cache_policy=NO_CACHE)
def step_task(name: str, output: str, thresholds: dict[str, int] | None) -> StepResult:
    """Run a whole-output step (e.g. the report) once."""
    whole = step(name)
    assert isinstance(whole, WholeStep)
    return whole.run(Path(output), thresholds)
