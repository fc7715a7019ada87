"""Planning a stage run and summarising it: the plain-Python side of the stage flows."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import BaseModel

from aidsafe.config import Settings
from aidsafe.errors import InputError
from aidsafe.partitions import earlier_ids, fingerprint_file
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.runner import PartitionJob, PartitionResult, Stage, fingerprint, stage_key


def plan_jobs(
    stage: Stage,
    paths: list[Path],
    output_dir: Path,
    settings: Settings,
    policies: PolicySet,
    prompts: PromptSet,
    retry: bool = False,
) -> list[PartitionJob]:
    """One job per partition, with the fingerprint that decides whether it can be skipped.

    retry: also rerun up-to-date partitions that have rows in the failures table (only those rows are redone).
    """
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise InputError(str(output_dir), f"two input partitions share a file name: {sorted(names)}")
    taken = earlier_ids(paths)
    key = stage_key(stage, settings, policies, prompts)
    jobs = [
        PartitionJob(
            stage=stage.name,
            input_path=path,
            output_dir=output_dir,
            settings=settings,
            policies=policies,
            stage_key=key,
            fingerprint=fingerprint(key, fingerprint_file(path)),
            taken_ids=taken[path],
        )
        for path in paths
    ]
    return [job.model_copy(update={"force": has_retryable_failures(job)}) if retry else job for job in jobs]


def has_retryable_failures(job: PartitionJob) -> bool:
    """Rows that failed in the model calls (not bad input, which needs the input fixed) can be retried."""
    if not job.failures_path.exists():
        return False
    failures = pq.read_table(job.failures_path, columns=["id", "stage"]).to_pylist()
    return any(f["id"] is not None and f["stage"] != "input" for f in failures)


class RunSummary(BaseModel):
    """The outcome of one stage over all partitions, written to summary/<stage>.json."""

    stage: str
    source: str
    output_dir: str
    settings: dict[str, Any]
    policy_set: str
    partitions: list[PartitionResult]
    rows_ok: int
    rows_failed: int
    llm_calls: int
    input_tokens: int
    output_tokens: int

    @property
    def failed_partitions(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.status == "failed"]

    @property
    def summary_path(self) -> Path:
        return Path(self.output_dir) / "summary" / f"{self.stage}.json"

    def counts(self, status: str) -> int:
        return sum(1 for p in self.partitions if p.status == status)

    def describe(self) -> str:
        text = (
            f"{self.stage}: {len(self.partitions)} partition(s): {self.counts('done')} processed, "
            f"{self.counts('skipped')} unchanged, {self.counts('failed')} failed; "
            f"rows: {self.rows_ok} ok, {self.rows_failed} failed"
        )
        processed = sum(p.rows_ok for p in self.partitions if p.status == "done")
        if processed:
            calls, tokens_in, tokens_out = (
                n / processed for n in (self.llm_calls, self.input_tokens, self.output_tokens)
            )
            text += (
                f"; per row: {calls:.1f} LLM calls, {tokens_in:.0f} input + {tokens_out:.0f} output tokens"
            )
        return text


def summarize(
    stage: str,
    source: str,
    output_dir: Path,
    results: list[PartitionResult],
    settings: Settings,
    policies: PolicySet,
) -> RunSummary:
    summary = RunSummary(
        stage=stage,
        source=source,
        output_dir=str(output_dir),
        settings=settings.public(),
        policy_set=policies.hash,
        partitions=results,
        rows_ok=sum(r.rows_ok for r in results),
        rows_failed=sum(r.rows_failed for r in results),
        llm_calls=sum(r.llm_calls for r in results),
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
    )
    summary.summary_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=summary.summary_path.parent, prefix=".summary.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(summary.model_dump(), handle, indent=2)
    os.replace(tmp, summary.summary_path)
    return summary
