"""Generation of one partition: read, deliberate every row concurrently, write output and failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import BaseModel

import aidsafe
from aidsafe.config import Settings
from aidsafe.errors import InputError
from aidsafe.models import StructuredCaller, build_roles
from aidsafe.output import Failure, failures_table, generated_row, output_table
from aidsafe.partitions import (
    Partition,
    RowRef,
    read_partition,
    stored_fingerprint,
    stored_row_count,
    write_atomic,
)
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from graphs.context import Context
from graphs.graph import graph
from graphs.nodes import StageFailed

TRANSIENT = (
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
    asyncio.TimeoutError,
)
Progress = Callable[[int, int], None]


class TransientFailures(Exception):
    """Rows of a partition failed on transient backend errors; the partition is not marked done."""


class PartitionJob(BaseModel):
    """Everything one partition task needs (plain data, so Prefect can record it)."""

    input_path: Path
    output_dir: Path
    settings: Settings
    policies: PolicySet
    fingerprint: str
    taken_ids: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.input_path.stem

    @property
    def output_path(self) -> Path:
        return self.output_dir / "generated" / f"{self.name}.parquet"

    @property
    def failures_path(self) -> Path:
        return self.output_dir / "failures" / f"{self.name}.parquet"


class PartitionResult(BaseModel):
    """What a partition task reports back to the flow."""

    partition: str
    status: Literal["done", "skipped", "failed"]
    rows_ok: int = 0
    rows_failed: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


def partition_fingerprint(
    input_path: Path, file_hash: str, settings: Settings, policies: str, prompts: str
) -> str:
    """What decides whether an output partition is still valid: input content, policies, prompts, settings."""
    parts = [file_hash, policies, prompts, settings.generation_identity(), aidsafe.__version__]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def is_done(job: PartitionJob) -> bool:
    return job.output_path.exists() and stored_fingerprint(job.output_path) == job.fingerprint


def skipped_result(job: PartitionJob) -> PartitionResult:
    """Counts of a partition finished by an earlier run."""
    rows_ok = stored_row_count(job.output_path)
    rows_failed = stored_row_count(job.failures_path) if job.failures_path.exists() else 0
    return PartitionResult(partition=job.name, status="skipped", rows_ok=rows_ok, rows_failed=rows_failed)


def _failure(job: PartitionJob, row: RowRef, exc: BaseException) -> Failure:
    stage = exc.stage if isinstance(exc, StageFailed) else "graph"
    cause = exc.cause if isinstance(exc, StageFailed) else exc
    return Failure(row.id, job.name, row.index, stage, type(cause).__name__, str(cause)[:2000])


async def deliberate_rows(
    rows: list[RowRef], context: Context, concurrency: int, progress: Progress | None = None
) -> tuple[list[tuple[RowRef, dict[str, Any]]], list[tuple[RowRef, BaseException]]]:
    """Run the graph over rows with bounded concurrency; every row ends in exactly one of the two lists."""
    gate = asyncio.Semaphore(concurrency)
    done: list[tuple[RowRef, dict[str, Any]]] = []
    failed: list[tuple[RowRef, BaseException]] = []

    async def one(row: RowRef) -> None:
        async with gate:
            try:
                state = await graph.ainvoke(
                    {"prompt": row.prompt},
                    context=context,
                    config={"recursion_limit": context.recursion_limit},
                )
                done.append((row, state))
            except Exception as exc:
                failed.append((row, exc))
            if progress:
                progress(len(done) + len(failed), len(rows))

    await asyncio.gather(*(one(r) for r in rows))
    return done, failed


def _models_column(models: dict[str, StructuredCaller], agents: list[str]) -> dict[str, Any]:
    return {
        "intent": models["intent"].model_name,
        "drafter": models["drafter"].model_name,
        "agents": [models[a].model_name for a in agents],
    }


async def _run(job: PartitionJob, partition: Partition, prompts: PromptSet, progress: Progress | None) -> Any:
    settings = job.settings
    async with openai.DefaultAsyncHttpxClient() as http_client:  # built inside the task's own event loop
        models = build_roles(settings, http_client)
        context = Context(models, prompts, tuple(settings.agent_roles), settings.max_rounds)
        done, failed = await deliberate_rows(partition.rows, context, settings.concurrency, progress)
    return done, failed, _models_column(models, settings.agent_roles)


def _usage_total(rows: list[dict[str, Any]]) -> dict[str, int]:
    """LLM calls and tokens of the successful rows, all stages together."""
    keys = {"llm_calls": "calls", "input_tokens": "input_tokens", "output_tokens": "output_tokens"}
    return {name: sum(u[key] for r in rows for u in r["usage"].values()) for name, key in keys.items()}


def generate_partition(
    job: PartitionJob, prompts: PromptSet, progress: Progress | None = None
) -> PartitionResult:
    """Generate one partition; raises TransientFailures (after writing) when rows hit backend outages."""
    started = time.monotonic()
    try:
        partition = read_partition(job.input_path, job.taken_ids)
    except InputError as exc:
        write_atomic(failures_table([Failure(None, job.name, exc.row, "input", "InputError", str(exc))]),
                     job.failures_path)  # fmt: skip
        return PartitionResult(partition=job.name, status="failed", error=str(exc))
    done, failed, models = asyncio.run(_run(job, partition, prompts, progress))
    done.sort(key=lambda item: item[0].index)
    generated = [generated_row(state, models, job.policies.hash) for _, state in done]
    failures = [Failure(i, job.name, r, "input", "InputError", reason) for r, i, reason in partition.rejected]
    failures += [_failure(job, row, exc) for row, exc in sorted(failed, key=lambda f: f[0].index)]
    transient = [f for _, f in failed if isinstance(getattr(f, "cause", f), TRANSIENT)]
    meta = {"input": str(job.input_path), "policy_set": job.policies.hash, "rows": str(len(done))}
    meta["fingerprint"] = "" if transient else job.fingerprint
    write_atomic(failures_table(failures), job.failures_path)
    write_atomic(output_table(partition.table, [r for r, _ in done], generated), job.output_path, meta)
    if transient:
        raise TransientFailures(f"{job.name}: {len(transient)} row(s) failed on transient backend errors")
    return PartitionResult(
        partition=job.name, status="done", rows_ok=len(done), rows_failed=len(failures),
        seconds=round(time.monotonic() - started, 2), **_usage_total(generated),
    )  # fmt: skip
