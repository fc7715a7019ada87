"""Running one row stage over one partition: read, process every row concurrently, write output and failures.

Every row stage has the same partition contract: the output partition is written atomically with a
fingerprint of everything that decides its content, so a rerun skips it while that is unchanged; every row
reaches either the output or the stage's failures table, with the reason. A row fails only on a model,
backend or input error; any other exception is a bug and fails the partition (not written, not done).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

import aidsafe
from aidsafe.calls import RowCalls
from aidsafe.config import Settings
from aidsafe.errors import InputError, StageFailed, TransientFailures, is_transient
from aidsafe.models import StructuredCaller, build_roles
from aidsafe.output import Failure, carried_names, failures_table, output_table
from aidsafe.partitions import (
    Partition,
    RowRef,
    stored_fingerprint,
    stored_meta,
    stored_row_count,
    write_atomic,
)
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stage import RowContext, RowStage
from aidsafe.summary import PartitionResult
from aidsafe.usage import Usage, total

Progress = Callable[[int, int], None]
ROW_FAILURES = (StageFailed, InputError)  # what fails one row; anything else fails the partition


class PartitionJob(BaseModel):
    """Everything one partition task needs (plain data, so Prefect can record it)."""

    stage: str
    input_path: Path
    output_dir: Path
    settings: Settings
    policies: PolicySet
    stage_key: str
    fingerprint: str
    taken_ids: frozenset[str] = frozenset()
    force: bool = False  # rerun even if up to date (to retry the rows in the failures table)

    @property
    def name(self) -> str:
        return self.input_path.stem

    def output_path(self, stage: RowStage) -> Path:
        return self.output_dir / stage.output / f"{self.name}.parquet"

    @property
    def failures_path(self) -> Path:
        return self.output_dir / "failures" / self.stage / f"{self.name}.parquet"


def stage_key(stage: RowStage, settings: Settings, policies: PolicySet, prompts: PromptSet) -> str:
    """Everything but the input that decides a stage's rows: policies, the stage's prompts and settings."""
    parts = [stage.name, policies.hash, prompts.hash_of(stage.prompts), stage.identity(settings)]
    return hashlib.sha256(json.dumps([*parts, aidsafe.__version__]).encode()).hexdigest()


def fingerprint(key: str, file_hash: str) -> str:
    """What decides a stage's output partition: the stage key and the input file's content."""
    return hashlib.sha256(f"{key}:{file_hash}".encode()).hexdigest()


def is_done(stage: RowStage, job: PartitionJob) -> bool:
    path = job.output_path(stage)
    return not job.force and path.exists() and stored_fingerprint(path) == job.fingerprint


def skipped_result(stage: RowStage, job: PartitionJob) -> PartitionResult:
    """Counts of a partition finished by an earlier run."""
    rows_failed = stored_row_count(job.failures_path) if job.failures_path.exists() else 0
    return PartitionResult(
        partition=job.name,
        status="skipped",
        rows_ok=stored_row_count(job.output_path(stage)),
        rows_failed=rows_failed,
    )


def _failure(job: PartitionJob, row: RowRef, exc: StageFailed | InputError) -> Failure:
    stage = exc.stage if isinstance(exc, StageFailed) else "input"
    cause = exc.cause if isinstance(exc, StageFailed) else exc
    return Failure(row.id, job.name, row.index, stage, type(cause).__name__, str(cause)[:2000])


Outcome = tuple[RowRef, dict[str, Any], Usage]
Failed = tuple[RowRef, StageFailed | InputError]


async def process_rows(
    stage: RowStage, rows: list[RowRef], make_context: Callable[[], RowContext], concurrency: int,
    progress: Progress | None = None,
) -> tuple[list[Outcome], list[Failed]]:  # fmt: skip
    """Process rows with bounded concurrency; every row ends in exactly one of the two lists, or (a bug in
    the stage) the first unexpected exception propagates and fails the partition."""
    gate = asyncio.Semaphore(concurrency)
    done: list[Outcome] = []
    failed: list[Failed] = []
    if progress:
        progress(0, len(rows))

    async def one(row: RowRef) -> None:
        async with gate:
            ctx = make_context()
            try:
                done.append((row, await stage.process(row, ctx), ctx.calls.used()))
            except ROW_FAILURES as exc:
                failed.append((row, exc))
            if progress:
                progress(len(done) + len(failed), len(rows))

    await asyncio.gather(*(one(r) for r in rows))
    return sorted(done, key=lambda d: d[0].index), sorted(failed, key=lambda f: f[0].index)


async def _run(
    stage: RowStage, job: PartitionJob, partition: Partition, prompts: PromptSet, progress: Progress | None
) -> tuple[list[Outcome], list[Failed]]:
    async with openai.DefaultAsyncHttpxClient() as http_client:  # built inside the task's own event loop
        models: dict[str, StructuredCaller] = dict(
            build_roles(job.settings, http_client, prompts, stage.roles(job.settings))
        )

        def make_context() -> RowContext:
            return RowContext(RowCalls(models, prompts), job.settings, job.policies, prompts)

        return await process_rows(stage, partition.rows, make_context, job.settings.concurrency, progress)


def reusable_rows(stage: RowStage, job: PartitionJob, partition: Partition) -> dict[int, int]:
    """Rows of the existing output that are still valid: same stage key, same id, same input values.

    Returns input row index -> output row index. This is what makes a rerun after added rows, a retry of
    failed rows or a changed upstream partition redo only the rows that need it.
    """
    path = job.output_path(stage)
    if not path.exists() or stored_meta(path).get("stage_key") != job.stage_key:
        return {}
    existing = pq.read_table(path)
    columns = carried_names(partition.table.column_names, stage.columns.names)
    if existing.column_names[: len(columns)] != columns:
        return {}
    try:
        old_rows = existing.select(columns).to_pylist()
        new = partition.table.rename_columns(columns).to_pylist()
    except UnicodeDecodeError:  # a carried column that is not valid UTF-8: compute every row again
        return {}
    old = {row["id"]: (i, row) for i, row in enumerate(old_rows)}
    return {r.index: old[r.id][0] for r in partition.rows if r.id in old and old[r.id][1] == new[r.index]}


def _combined(
    stage: RowStage, job: PartitionJob, partition: Partition, done: list[Outcome], reuse: dict[int, int]
) -> pa.Table:
    """Reused rows and newly processed rows, in input order."""
    table = output_table(partition.table, [d[0] for d in done], [d[1] for d in done], stage.columns)
    if reuse:
        old = pq.read_table(job.output_path(stage)).take(pa.array(list(reuse.values()), type=pa.int64()))
        table = pa.concat_tables([old.cast(table.schema), table])
    order = [*reuse, *(d[0].index for d in done)]
    return table.take(pa.array(sorted(range(len(order)), key=order.__getitem__), type=pa.int64()))


def _unreadable(job: PartitionJob, exc: InputError) -> PartitionResult:
    write_atomic(failures_table([Failure(None, job.name, exc.row, "input", "InputError", str(exc))]),
                 job.failures_path)  # fmt: skip
    return PartitionResult(partition=job.name, status="failed", error=str(exc))


def run_partition(
    stage: RowStage, job: PartitionJob, prompts: PromptSet, progress: Progress | None = None
) -> PartitionResult:
    """Run a stage over one partition; raises TransientFailures (after writing) on backend outages."""
    started = time.monotonic()
    try:
        partition = stage.read(job.input_path, job.taken_ids, job.settings.max_prompt_chars)
    except InputError as exc:
        return _unreadable(job, exc)
    reuse = reusable_rows(stage, job, partition)
    partition.rows = [r for r in partition.rows if r.index not in reuse]
    done, failed = asyncio.run(_run(stage, job, partition, prompts, progress))
    failures = [Failure(i, job.name, r, "input", "InputError", reason) for r, i, reason in partition.rejected]
    failures += [_failure(job, row, exc) for row, exc in failed]
    transient = [exc for _, exc in failed if is_transient(exc)]
    meta = {"stage": stage.name, "input": str(job.input_path), "policy_set": job.policies.hash}
    meta |= {"stage_key": job.stage_key, "fingerprint": "" if transient else job.fingerprint}
    write_atomic(failures_table(failures), job.failures_path)
    write_atomic(_combined(stage, job, partition, done, reuse), job.output_path(stage), meta)
    if transient:
        raise TransientFailures(f"{job.name}: {len(transient)} row(s) failed on transient backend errors")
    usage = total(*(d[2] for d in done))
    return PartitionResult(
        partition=job.name, status="done", rows_ok=len(done) + len(reuse), rows_reused=len(reuse),
        rows_failed=len(failures), seconds=round(time.monotonic() - started, 2), llm_calls=usage["calls"],
        input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
    )  # fmt: skip
