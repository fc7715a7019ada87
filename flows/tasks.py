"""Prefect tasks: one per partition, small and typed; retried only on transient errors."""

from __future__ import annotations

import openai
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from aidsafe.progress import publish
from aidsafe.prompts import PromptSet
from aidsafe.runner import (
    PartitionJob,
    PartitionResult,
    TransientFailures,
    is_done,
    run_partition,
    skipped_result,
)
from aidsafe.stages import STAGES

TRANSIENT_ERRORS = (
    TransientFailures,
    openai.APIConnectionError,
    openai.RateLimitError,
    ConnectionError,
    TimeoutError,
)


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """Retry a partition task only when it failed on a transient error."""
    try:
        state.result()  # type: ignore[attr-defined]
    except TRANSIENT_ERRORS:
        return True
    except Exception:
        return False
    return False


@task(  # retries and their delays come from the settings (flows/common.py: run_stage)
    name="partition",
    task_run_name="{job.stage}-{job.name}",
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def partition_task(job: PartitionJob, prompts: PromptSet) -> PartitionResult:
    """Run one stage over one partition, unless its output is already up to date."""
    logger = get_run_logger()
    stage = STAGES[job.stage]
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
    logger.info(
        "%s %s: %s, %d rows ok, %d failed",
        job.stage,
        job.name,
        result.status,
        result.rows_ok,
        result.rows_failed,
    )
    return result
