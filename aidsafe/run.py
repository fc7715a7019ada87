"""Planning a run and summarising it: the plain-Python side of the generate flow."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel

from aidsafe.config import Settings
from aidsafe.generation import PartitionJob, PartitionResult, partition_fingerprint
from aidsafe.partitions import discover, earlier_ids, fingerprint_file
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet


def plan_jobs(
    source: str, output_dir: Path, settings: Settings, policies: PolicySet, prompts: PromptSet
) -> list[PartitionJob]:
    """One job per input partition, each with the fingerprint that decides whether it can be skipped."""
    paths = discover(source)
    taken = earlier_ids(paths)
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"two input partitions share a file name; names must be unique: {sorted(names)}")
    return [
        PartitionJob(
            input_path=path,
            output_dir=output_dir,
            settings=settings,
            policies=policies,
            fingerprint=partition_fingerprint(
                path, fingerprint_file(path), settings, policies.hash, prompts.hash
            ),
            taken_ids=taken[path],
        )
        for path in paths
    ]


class RunSummary(BaseModel):
    """The outcome of a generate run, written to summary.json and printed by the CLI."""

    output_dir: str
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
        return Path(self.output_dir) / "summary.json"

    def counts(self, status: str) -> int:
        return sum(1 for p in self.partitions if p.status == status)

    def describe(self) -> str:
        text = (
            f"{len(self.partitions)} partition(s): {self.counts('done')} generated, {self.counts('skipped')} "
            f"unchanged, {self.counts('failed')} failed; rows: {self.rows_ok} ok, {self.rows_failed} failed"
        )
        generated = sum(p.rows_ok for p in self.partitions if p.status == "done")
        if generated:
            calls, tokens_in, tokens_out = (
                n / generated for n in (self.llm_calls, self.input_tokens, self.output_tokens)
            )
            text += f"; per generated row: {calls:.1f} LLM calls, "
            text += f"{tokens_in:.0f} input + {tokens_out:.0f} output tokens"
        return text


def summarize(output_dir: Path, results: list[PartitionResult]) -> RunSummary:
    summary = RunSummary(
        output_dir=str(output_dir),
        partitions=results,
        rows_ok=sum(r.rows_ok for r in results),
        rows_failed=sum(r.rows_failed for r in results),
        llm_calls=sum(r.llm_calls for r in results),
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".summary.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(summary.model_dump(), handle, indent=2)
    os.replace(tmp, summary.summary_path)
    return summary
