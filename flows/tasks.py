"""Prefect tasks: one per partition, small and typed; retried only on transient errors."""

from __future__ import annotations

import openai
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from aidsafe.generation import (
    PartitionJob,
    PartitionResult,
    TransientFailures,
    generate_partition,
    is_done,
    skipped_result,
)
from aidsafe.prompts import PromptSet

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


@task(
    name="generate-partition",
    task_run_name="generate-{job.name}",
    retries=2,
    retry_delay_seconds=[15, 60],
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def generate_partition_task(job: PartitionJob, prompts: PromptSet) -> PartitionResult:
    """Deliberate every row of one partition, unless its output is already up to date."""
    logger = get_run_logger()
    if is_done(job):
        logger.info("%s: unchanged since the last run, skipped", job.name)
        return skipped_result(job)

    def progress(finished: int, total: int) -> None:
        if finished == total or finished % max(1, total // 10) == 0:
            logger.info("%s: %d/%d rows", job.name, finished, total)

    result = generate_partition(job, prompts, progress)
    logger.info("%s: %s, %d rows ok, %d failed", job.name, result.status, result.rows_ok, result.rows_failed)
    return result
