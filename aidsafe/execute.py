"""Running one row stage over one partition: read, process every row concurrently, write output and failures.

Every row stage has the same partition contract: the output partition is written atomically with a
fingerprint of everything that decides its content, so a rerun skips it while that is unchanged; every row
reaches either the output or the stage's failures table, with the reason. A row fails only on a model,
backend or input error; any other exception is a bug and fails the partition (not written, not done).
While the rows run, the finished ones are saved in checkpoint chunks (aidsafe.checkpoint), so a killed
partition's rerun reuses them like the rows of a previous output file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

import aidsafe
from aidsafe.calls import RowCalls
from aidsafe.checkpoint import Checkpoint, checkpoint_dir, chunk_paths, remove_checkpoints
from aidsafe.config import Settings
from aidsafe.errors import InputError, StageFailed, TransientFailures, is_transient
from aidsafe.interrupt import until_stopped
from aidsafe.llm_io import LLM_LOOP, Connections
from aidsafe.models import build_roles
from aidsafe.output import (
    PART,
    Failure,
    carried_names,
    failure_counts,
    failures_table,
    is_part_failure,
    output_table,
)
from aidsafe.partitions import (
    Partition,
    RowRef,
    fingerprint_file,
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

Progress = Callable[[int, int], None]  # rows finished, rows to do; called in the task's thread
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

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.output_dir, self.stage, self.name)


def stage_key(stage: RowStage, settings: Settings, policies: PolicySet, prompts: PromptSet) -> str:
    """Everything but the input that decides a stage's rows: policies, the stage's prompts and settings, and
    its columns (rows written before a column was added are made again)."""
    parts = [stage.name, policies.hash, prompts.hash_of(stage.prompts), stage.identity(settings)]
    parts += [f"{column.name}:{column.type}" for column in stage.columns]
    files = [*stage.files, *(stage.setting_files(settings) if stage.setting_files else ())]
    parts += [fingerprint_file(path) for path in files]
    return hashlib.sha256(json.dumps([*parts, aidsafe.__version__]).encode()).hexdigest()


def fingerprint(key: str, file_hash: str) -> str:
    """What decides a stage's output partition: the stage key and the input file's content."""
    return hashlib.sha256(f"{key}:{file_hash}".encode()).hexdigest()


def is_done(stage: RowStage, job: PartitionJob) -> bool:
    path = job.output_path(stage)
    return not job.force and path.exists() and stored_fingerprint(path) == job.fingerprint


def skipped_result(stage: RowStage, job: PartitionJob) -> PartitionResult:
    """Counts of a partition finished by an earlier run."""
    failed, parts = failure_counts(job.failures_path) if job.failures_path.exists() else (0, 0)
    return PartitionResult(
        partition=job.name,
        status="skipped",
        rows_ok=stored_row_count(job.output_path(stage)),
        rows_failed=failed,
        parts_failed=parts,
    )


def _failure(job: PartitionJob, row: RowRef, exc: StageFailed | InputError) -> Failure:
    stage = exc.stage if isinstance(exc, StageFailed) else "input"
    cause = exc.cause if isinstance(exc, StageFailed) else exc
    return Failure(row.id, job.name, row.index, stage, type(cause).__name__, str(cause)[:2000])


def _part_failures(job: PartitionJob, done: list[Outcome]) -> list[Failure]:
    """The failed parts of rows that reached the output, each a line of the failures table."""
    return [
        Failure(
            row.id,
            job.name,
            row.index,
            f"{part}{PART}{exc.stage}",
            type(exc.cause).__name__,
            str(exc.cause)[:2000],
        )
        for row, _, _, parts in done
        for part, exc in parts
    ]


def earlier_parts(job: PartitionJob) -> dict[str, list[dict[str, Any]]]:
    """The failed parts in the partition's failures table, by row id."""
    if not job.failures_path.exists():
        return {}
    parts: dict[str, list[dict[str, Any]]] = {}
    for failure in pq.read_table(job.failures_path).to_pylist():
        if is_part_failure(str(failure["stage"])):
            parts.setdefault(str(failure["id"]), []).append(failure)
    return parts


def reused_parts(job: PartitionJob, partition: Partition, reuse: Reuse) -> tuple[Reuse, list[Failure]]:
    """Rows with failed parts: a retry redoes them (they are in the output, so otherwise reused); any other
    run keeps their failures-table lines when it reuses them."""
    parts = earlier_parts(job)
    ids = {row.index: row.id for row in partition.rows}
    if job.force:
        return {i: found for i, found in reuse.items() if ids.get(i) not in parts}, []
    kept = [
        Failure(f["id"], job.name, index, f["stage"], f["error_type"], f["message"])
        for index in sorted(reuse)
        for f in parts.get(ids[index], [])
    ]
    return reuse, kept


PartsFailed = list[tuple[str, StageFailed]]
Outcome = tuple[RowRef, dict[str, Any], Usage, PartsFailed]
Failed = tuple[RowRef, StageFailed | InputError]
Finished = Callable[[RowRef, dict[str, Any]], None]  # told of every row that succeeded, as it does
Reuse = dict[int, tuple[int, int]]  # input row index -> (earlier table, row in that table)


async def process_rows(
    stage: RowStage, rows: list[RowRef], make_context: Callable[[], RowContext], concurrency: int,
    progress: Progress | None = None, on_done: Finished | None = None,
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
                values = await stage.process(row, ctx)
            except ROW_FAILURES as exc:
                failed.append((row, exc))
            else:
                done.append((row, values, ctx.calls.used(), ctx.parts_failed))
                if on_done:
                    on_done(row, values)
            if progress:
                progress(len(done) + len(failed), len(rows))

    await asyncio.gather(*(one(r) for r in rows))
    return sorted(done, key=lambda d: d[0].index), sorted(failed, key=lambda f: f[0].index)


async def _run(
    stage: RowStage, job: PartitionJob, partition: Partition, prompts: PromptSet, progress: Progress | None,
    connections: Connections,
) -> tuple[list[Outcome], list[Failed]]:  # fmt: skip
    checkpoint = _checkpoint(stage, job, partition)
    async with checkpoint.saving():  # its timer runs in the LLM loop, with the rows
        models = build_roles(job.settings, connections, prompts, stage.roles(job.settings))

        def make_context() -> RowContext:
            return RowContext(RowCalls(models, prompts), job.settings, job.policies, prompts)

        concurrency = job.settings.concurrency
        rows = process_rows(stage, partition.rows, make_context, concurrency, progress, checkpoint.add)
        return await until_stopped(rows)


def _checkpoint(stage: RowStage, job: PartitionJob, partition: Partition) -> Checkpoint:
    """The partition's checkpoint: its finished rows as output rows, in chunks marked with the stage key."""

    def build(rows: list[RowRef], values: list[dict[str, Any]]) -> pa.Table:
        return output_table(partition.table, rows, values, stage.columns)

    meta = {"stage": stage.name, "partition": job.name, "input": str(job.input_path)}
    meta |= {"policy_set": job.policies.hash, "stage_key": job.stage_key}
    settings = job.settings
    return Checkpoint(job.checkpoint_dir, build, meta, settings.checkpoint_rows, settings.checkpoint_seconds)


def earlier_tables(stage: RowStage, job: PartitionJob) -> list[pa.Table]:
    """Earlier work on the partition made with the same stage key: its previous output file, then the
    checkpoint chunks of an unfinished run (killed, or failed on a bug)."""
    paths = [job.output_path(stage), *chunk_paths(job.checkpoint_dir)]
    valid = [p for p in paths if p.exists() and stored_meta(p).get("stage_key") == job.stage_key]
    return [pq.read_table(p) for p in valid]


def _rows_by_id(table: pa.Table, columns: list[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """An earlier table's carried input values by id (none when its columns do not match)."""
    if table.column_names[: len(columns)] != columns:
        return {}
    try:
        rows = table.select(columns).to_pylist()
    except UnicodeDecodeError:  # a carried column that is not valid UTF-8: compute every row again
        return {}
    return {row["id"]: (i, row) for i, row in enumerate(rows)}


def reusable_rows(stage: RowStage, partition: Partition, earlier: list[pa.Table]) -> Reuse:
    """Rows of earlier work (earlier_tables: same stage key) that are still valid: same id, same input values.

    This is what makes a rerun after added rows, a retry of failed rows, a changed upstream partition or a
    kill in the middle of a partition redo only the rows that need it. Each row is taken from the first
    table that has it valid, so a row both in the previous output and in a chunk is used once.
    """
    columns = carried_names(partition.table.column_names, stage.columns.names)
    try:
        new = partition.table.rename_columns(columns).to_pylist()
    except UnicodeDecodeError:
        return {}
    wanted = {r.id: r.index for r in partition.rows}
    reuse: Reuse = {}
    for number, table in enumerate(earlier):
        for row_id, (position, values) in _rows_by_id(table, columns).items():
            index = wanted.get(row_id)
            if index is not None and index not in reuse and values == new[index]:
                reuse[index] = (number, position)
    return reuse


def _combined(
    stage: RowStage, partition: Partition, done: list[Outcome], reuse: Reuse, earlier: list[pa.Table]
) -> pa.Table:
    """Reused rows and newly processed rows, in input order."""
    table = output_table(partition.table, [d[0] for d in done], [d[1] for d in done], stage.columns)
    picked: dict[int, list[tuple[int, int]]] = {}  # earlier table -> (input row, row in that table)
    for index, (number, position) in reuse.items():
        picked.setdefault(number, []).append((index, position))
    parts, order = [table], [d[0].index for d in done]
    for number, pairs in picked.items():
        rows = pa.array([position for _, position in pairs], type=pa.int64())
        parts.append(earlier[number].take(rows).cast(table.schema))
        order += [index for index, _ in pairs]
    combined = pa.concat_tables(parts)
    return combined.take(pa.array(sorted(range(len(order)), key=order.__getitem__), type=pa.int64()))


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
    earlier = earlier_tables(stage, job)
    reuse, kept_parts = reused_parts(job, partition, reusable_rows(stage, partition, earlier))
    partition.rows = [r for r in partition.rows if r.index not in reuse]
    counts = [0, len(partition.rows)]  # rows finished, rows to do: set on the LLM loop, read here

    def count(finished: int, total: int) -> None:
        counts[:] = [finished, total]

    def report() -> None:
        if progress:
            progress(*counts)

    done, failed = LLM_LOOP.run(lambda conns: _run(stage, job, partition, prompts, count, conns), report)
    report()
    failures = [Failure(i, job.name, r, "input", "InputError", reason) for r, i, reason in partition.rejected]
    failures += [_failure(job, row, exc) for row, exc in failed]
    parts = _part_failures(job, done) + kept_parts
    transient = [exc for _, exc in failed if is_transient(exc)]
    meta = {"stage": stage.name, "input": str(job.input_path), "policy_set": job.policies.hash}
    meta |= {"stage_key": job.stage_key, "fingerprint": "" if transient else job.fingerprint}
    write_atomic(failures_table(failures + parts), job.failures_path)
    write_atomic(_combined(stage, partition, done, reuse, earlier), job.output_path(stage), meta)
    remove_checkpoints(job.checkpoint_dir)  # their rows are in the output file now
    if transient:
        raise TransientFailures(f"{job.name}: {len(transient)} row(s) failed on transient backend errors")
    usage = total(*(d[2] for d in done))
    return PartitionResult(
        partition=job.name, status="done", rows_ok=len(done) + len(reuse), rows_reused=len(reuse),
        rows_failed=len(failures), parts_failed=len(parts), seconds=round(time.monotonic() - started, 2),
        llm_calls=usage["calls"],
        input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
    )  # fmt: skip
