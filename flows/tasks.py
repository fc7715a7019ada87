"""Prefect tasks: one per partition, small and typed; retried only on transient errors."""

from __future__ import annotations

import time
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

ARTIFACT_SECONDS = 5.0  # how often a running partition's progress artifact is updated


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

    result = run_partition(stage, job, prompts, ProgressReport(job.stage, job.name, logger))
    logger.info("%s %s: %s, %d rows ok, %d failed", job.stage, job.name, result.status, result.rows_ok,
                result.rows_failed)  # fmt: skip
    return result


class ProgressReport:
    """A running partition's rows done, told about once a second from its task's thread: to the terminal
    bar (aidsafe.progress), as a log line per tenth of its rows, and as a Prefect progress artifact. The
    artifact is made at the first report (a partition done within a second costs one API call for it),
    then updated every ARTIFACT_SECONDS and when the partition is done."""

    def __init__(self, stage: str, partition: str, logger: Any) -> None:
        self._stage, self._partition, self._logger = stage, partition, logger
        self._artifact: Any = None
        self._reported, self._logged = -1, 0
        self._updated = 0.0

    def __call__(self, finished: int, total: int) -> None:
        if finished == self._reported:
            return
        self._reported = finished
        publish(self._stage, self._partition, finished, total)
        if finished < total and finished - self._logged >= max(1, total // 10):
            self._logged = finished
            self._logger.info("%s %s: %d/%d rows", self._stage, self._partition, finished, total)
        percent = 100.0 * finished / total if total else 100.0
        if self._artifact is None:
            description = f"{self._stage} {self._partition}: rows done (%)"
            self._artifact = create_progress_artifact(percent, description=description)
            self._updated = time.monotonic()
        elif finished == total or time.monotonic() - self._updated >= ARTIFACT_SECONDS:
            update_progress_artifact(self._artifact, percent)
            self._updated = time.monotonic()


@task(name="step", task_run_name="{name}", cache_policy=NO_CACHE)
def step_task(name: str, output: str, thresholds: dict[str, int] | None) -> StepResult:
    """Run a whole-output step (e.g. the report) once."""
    whole = step(name)
    assert isinstance(whole, WholeStep)
    return whole.run(Path(output), thresholds)
