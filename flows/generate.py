"""The `generate` flow: fan out over Parquet partitions, one task each, and summarise."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, unmapped
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import load_settings
from aidsafe.embedded import live_settings
from aidsafe.errors import AidsafeError
from aidsafe.generation import PartitionResult, is_done
from aidsafe.policies import load_policies
from aidsafe.prompts import load_prompts
from aidsafe.run import RunSummary, plan_jobs, summarize
from flows.tasks import generate_partition_task


class PartitionsFailed(AidsafeError):
    """Some partitions could not be generated; the others finished."""


@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def generate(
    input: str = "data/sample",
    output: str = "out",
    config: str | None = None,
    policies: str | None = None,
    concurrency: int | None = None,
    max_rounds: int | None = None,
    agents: int | None = None,
    base_url: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
) -> RunSummary:
    """Deliberated CoT rows for every prompt of the input partitions (AIDSAFE stages 1-3)."""
    logger = get_run_logger()
    overrides = {"policies": policies, "concurrency": concurrency, "max_rounds": max_rounds, "agents": agents,
                 "base_url": base_url, "model": model, "max_tokens": max_tokens}  # fmt: skip
    settings = load_settings(Path(config) if config else None, overrides=overrides)
    policy_set = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policy_set.render())
    output_dir = Path(output)
    jobs = plan_jobs(input, output_dir, settings, policy_set, prompts)
    logger.info("%d partition(s), policy set %s, prompts %s", len(jobs), policy_set.hash, prompts.hash)
    results: list[PartitionResult] = []
    pending = [job for job in jobs if not is_done(job)]
    with live_settings(settings, output_dir / "logs" / "embedded-server.log", needed=bool(pending)) as live:
        futures = generate_partition_task.map(
            [j.model_copy(update={"settings": live}) for j in jobs], unmapped(prompts)
        )
        wait(futures)
    for job, future in zip(jobs, futures, strict=True):
        state = future.state
        if state.is_completed():
            results.append(future.result())
        else:
            message = str(state.message or state.name)
            results.append(PartitionResult(partition=job.name, status="failed", error=message))
    summary = summarize(output_dir, results)
    logger.info("%s; summary: %s", summary.describe(), summary.summary_path)
    if summary.failed_partitions:
        names = ", ".join(f"{p.partition} ({p.error})" for p in summary.failed_partitions)
        raise PartitionsFailed(f"{len(summary.failed_partitions)} partition(s) failed: {names}")
    return summary
