"""The streaming run: each input partition goes through the row stages as a chain of tasks, so that a long
run has finished, graded partitions early instead of waiting for every partition at every stage.

The stages reading the input (generate, baseline) are planned up front over all partitions (their ids are
checked across partitions); a stage reading an earlier stage's output (refine, grade) is planned per
partition by its own task, submitted once the stage before has written that partition (the fingerprint
hashes that file). At most `workers` partition tasks run at once, a later stage of a partition before an
earlier stage of another, so finished partitions come out early and no task waits on another in a worker.
A failed partition's later stages are not run and count as failed ("upstream generate failed"); the other
partitions go on. Each stage's summary, artifact and failure (flows.stages.finish_stage) come at the end,
as in the per-stage flows, whose skips, row reuse, retries and failures tables this shares (flows.tasks).

In the Prefect UI the run flow has one task run per stage and partition (generate-part-0, refine-part-0,
grade-part-0, baseline-part-0, ...), each later one linked to the one it read.
"""

from __future__ import annotations

import heapq
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner
from pydantic import BaseModel

from aidsafe.config import Options, Settings
from aidsafe.embedded import live_settings
from aidsafe.errors import RunFailed
from aidsafe.execute import PartitionJob, PartitionResult, is_done, skipped_result, stage_key
from aidsafe.interrupt import STOPPING, rows_stop_on_interrupt
from aidsafe.pipeline import input_files, row_stage
from aidsafe.plan import plan_job, plan_jobs
from aidsafe.policies import PolicySet, load_policies
from aidsafe.preflight import check_context
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.stage import INPUT, RowStage
from aidsafe.task_runners import partition_runner, task_argument
from flows.stages import finish_stage
from flows.tasks import partition_task, retry_transient, run_job


class Chain(BaseModel):
    """What every link of the run shares (plain data, so a task can take it)."""

    stages: tuple[str, ...]  # the run's row stages, in pipeline order
    partitions: tuple[str, ...]  # every input partition, in order
    output_dir: Path
    settings: Settings  # once the run is live, with the embedded server's URL
    policies: PolicySet
    stage_keys: dict[str, str]  # stage -> stage_key, from the settings as configured (not `keys`:
    # Prefect reads a task's parameters with dict(model), which would call it)
    retry: bool

    def children(self, stage: str) -> list[str]:
        """The run's stages that read what stage writes."""
        return [s for s in self.stages if row_stage(s).reads == stage]

    def depth(self, stage: str) -> int:
        reads = row_stage(stage).reads
        return 0 if reads == INPUT else 1 + self.depth(reads)

    def plan(self, stage: str, source: Path) -> PartitionJob:
        """A later stage's job for one partition, from its input (source) as written now."""
        found = row_stage(stage)
        return plan_job(found, source, self.output_dir, self.settings, self.policies, self.stage_keys[stage],
                        self.retry, self.partitions)  # fmt: skip


@task(  # retries and their delays come from the settings (Scheduler)
    name="partition",
    task_run_name="{stage}-{source.stem}",
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def link_task(stage: str, source: Path, chain: Chain, prompts: PromptSet) -> PartitionResult:
    """One partition of a stage that reads an earlier stage's output, started once that partition is
    written there: planned now (a retry plans again), then run as every partition task."""
    return run_job(chain.plan(stage, source), prompts)


@dataclass(order=True)
class Link:
    """One stage of one partition, ready to run; ordered later stages first, then earlier partitions."""

    rank: tuple[int, int, int]
    stage: str = field(compare=False)
    partition: str = field(compare=False)
    job: PartitionJob | None = field(compare=False, default=None)  # planned up front (reads the input)
    source: Path | None = field(compare=False, default=None)  # else: the upstream output it reads
    upstream: PrefectFuture[Any] | None = field(compare=False, default=None)


def failed(partition: str, error: str) -> PartitionResult:
    return PartitionResult(partition=partition, status="failed", error=error)


def outcome(partition: str, future: PrefectFuture[Any]) -> PartitionResult:
    """A finished task's result, or its failure (after its retries) as a failed partition."""
    future.wait()  # takes the final state from the runner; `state` alone may ask the API, which may lag
    state = future.state
    if state.is_completed():
        result: PartitionResult = future.result()
        return result
    return failed(partition, str(state.message or state.name))


class Scheduler:
    """Runs the links of every partition through one task runner, at most `workers` at once: the runner
    gets a task only when it can start it, so the next link is picked here, by rank, not by the runner."""

    def __init__(self, chain: Chain, prompts: PromptSet, runner: TaskRunner[Any]) -> None:
        self.chain, self.prompts, self.runner = chain, prompts, runner
        self.ready: list[Link] = []
        self.running: dict[PrefectFuture[Any], Link] = {}
        self.done: queue.Queue[PrefectFuture[Any]] = queue.Queue()  # filled by the futures as they finish
        self.results: dict[tuple[str, str], PartitionResult] = {}
        retries, delays = chain.settings.partition_retries, chain.settings.partition_retry_delays
        self.root_task = partition_task.with_options(retries=retries, retry_delay_seconds=delays)
        self.link_task = link_task.with_options(retries=retries, retry_delay_seconds=delays)

    def add(self, stage: str, index: int, partition: str, **where: Any) -> None:
        rank = (-self.chain.depth(stage), index, self.chain.stages.index(stage))
        heapq.heappush(self.ready, Link(rank, stage, partition, **where))

    def submit(self, link: Link) -> PrefectFuture[Any]:
        settings = self.chain.settings
        prompts = task_argument(self.prompts, settings)
        if link.job is not None:
            job = task_argument(link.job, settings)
            future = self.runner.submit(self.root_task, {"job": job, "prompts": prompts})
        else:
            chain = task_argument(self.chain, settings)
            parameters = {"stage": link.stage, "source": link.source, "chain": chain, "prompts": prompts}
            wait_for = [link.upstream] if link.upstream is not None else None  # done: only the UI's edge
            future = self.runner.submit(self.link_task, parameters, wait_for=wait_for)
        future.add_done_callback(self.done.put)
        return future

    def drain(self) -> None:
        """Run every ready link and the ones they make ready; stop submitting once interrupted."""
        workers = self.chain.settings.workers
        while self.ready or self.running:
            while self.ready and len(self.running) < workers and not STOPPING.is_set():
                link = heapq.heappop(self.ready)
                skipped = self.up_to_date(link)
                if skipped is None:
                    self.running[self.submit(link)] = link
                else:
                    self.finished(link, skipped, None)
            if not self.running:
                return
            future = self.done.get()
            link = self.running.pop(future)
            self.finished(link, outcome(link.partition, future), future)

    def up_to_date(self, link: Link) -> PartitionResult | None:
        """The counts of a link whose output is up to date, found without a task (a rerun of a finished
        run starts none: each costs the Prefect API a task run), else None."""
        stage = row_stage(link.stage)
        job = link.job
        if job is None:
            assert link.source is not None
            job = self.chain.plan(link.stage, link.source)
        return skipped_result(stage, job) if is_done(stage, job) else None

    def finished(self, link: Link, result: PartitionResult, future: PrefectFuture[Any] | None) -> None:
        """Record a link's result and make its partition's next stages ready (or failed, if it failed)."""
        self.results[(link.stage, link.partition)] = result
        index = link.rank[1]
        for child in self.chain.children(link.stage):
            if result.status == "failed":
                self.upstream_failed(child, link.partition, f"upstream {link.stage} failed")
                continue
            source = self.chain.output_dir / row_stage(link.stage).output / f"{link.partition}.parquet"
            self.add(child, index, link.partition, source=source, upstream=future)

    def upstream_failed(self, stage: str, partition: str, reason: str) -> None:
        self.results[(stage, partition)] = failed(partition, reason)
        for child in self.chain.children(stage):
            self.upstream_failed(child, partition, reason)

    def by_stage(self) -> dict[str, list[PartitionResult]]:
        """Every stage's results in partition order; a link never started (interrupted) counts as failed."""
        partitions = self.chain.partitions
        return {
            stage: [self.results.get((stage, p)) or failed(p, "not run: interrupted") for p in partitions]
            for stage in self.chain.stages
        }


def plan_chain(
    stages: list[RowStage], input: str, output_dir: Path, settings: Settings, policies: PolicySet,
    prompts: PromptSet, retry: bool,
) -> tuple[Chain, dict[str, list[PartitionJob]]]:  # fmt: skip
    """The chain, and the jobs of the stages that read the input (the others are planned as they go)."""
    names = [s.name for s in stages]
    assert all(s.reads == INPUT or s.reads in names for s in stages), f"a stage reads none of {names}"
    paths = input_files(stages[0].name, output_dir, input)
    roots = {
        s.name: plan_jobs(s, paths, output_dir, settings, policies, prompts, retry)
        for s in stages
        if s.reads == INPUT
    }
    partitions = tuple(job.name for job in next(iter(roots.values())))
    keys = {s.name: stage_key(s, settings, policies, prompts) for s in stages}
    chain = Chain(stages=tuple(names), partitions=partitions, output_dir=output_dir, settings=settings,
                  policies=policies, stage_keys=keys, retry=retry)  # fmt: skip
    get_run_logger().info("%s: %d partition(s), policy set %s", " -> ".join(names), len(partitions),
                          policies.hash)  # fmt: skip
    return chain, roots


def may_call(chain: Chain, roots: dict[str, list[PartitionJob]]) -> bool:
    """Whether any link may have rows to send to a model, so the embedded server (20-30 s to start) or a
    cluster is started only then: a later stage of a partition whose output is up to date is planned now
    from that output, which its stage will not rewrite."""
    return any(_pending(chain, job) for jobs in roots.values() for job in jobs)


def _pending(chain: Chain, job: PartitionJob) -> bool:
    stage = row_stage(job.stage)
    if not is_done(stage, job):
        return True
    source = job.output_path(stage)
    return any(_pending(chain, chain.plan(child, source)) for child in chain.children(job.stage))


def finish(
    stages: list[RowStage], results: dict[str, list[PartitionResult]], input: str, output_dir: Path,
    settings: Settings, policies: PolicySet,
) -> list[str]:  # fmt: skip
    """Every stage's summary and artifact; returns the failed stages' errors (each names its stage)."""
    errors = []
    for stage in stages:
        source = input if stage.reads == INPUT else str(output_dir / row_stage(stage.reads).output)
        try:
            finish_stage(stage, source, output_dir, results[stage.name], settings, policies)
        except RunFailed as exc:  # PartitionsFailed or TooManyFailedRows: the other stages still count
            errors.append(str(exc))
    return errors


def stream(
    stages: list[RowStage], input: str, output: str, options: Options | None, retry: bool
) -> list[str]:
    """Run the row stages over every partition of input as per-partition chains (inside a flow, holding the
    output lock); returns the errors of the stages that failed, after writing every stage's summary."""
    settings = (options or Options()).load()
    policies = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policies.render())
    check_context(settings, prompts)
    output_dir = Path(output)
    chain, roots = plan_chain(stages, input, output_dir, settings, policies, prompts, retry)
    needed = may_call(chain, roots)
    log = output_dir / "logs" / "embedded-server.log"
    runner = partition_runner(settings, needed)
    # exits in reverse: an interrupt stops the rows, the runner waits for its tasks, then the server stops
    with live_settings(settings, log, needed) as live, runner, rows_stop_on_interrupt():
        scheduler = Scheduler(chain.model_copy(update={"settings": live}), prompts, runner)
        for stage, jobs in roots.items():
            for index, job in enumerate(jobs):
                scheduler.add(stage, index, job.name, job=job.model_copy(update={"settings": live}))
        scheduler.drain()
        results = scheduler.by_stage()  # while the runner runs: a cluster's futures die with its client
    return finish(stages, results, input, output_dir, settings, policies)
