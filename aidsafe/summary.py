"""The outcome of one stage over all partitions, written to OUTPUT/summary/<stage>.json."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from aidsafe.config import Settings
from aidsafe.policies import PolicySet


class PartitionResult(BaseModel):
    """What a partition task reports back to its flow."""

    partition: str
    status: Literal["done", "skipped", "failed"]
    rows_ok: int = 0
    rows_reused: int = 0
    rows_failed: int = 0
    parts_failed: int = 0  # failed parts of rows that reached the output (aidsafe.output.PART)
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


class StageSummary(BaseModel):
    """The outcome of one stage over all partitions."""

    stage: str
    source: str
    output_dir: str
    settings: dict[str, Any]
    policy_set: str
    partitions: list[PartitionResult]
    rows_ok: int
    rows_failed: int
    parts_failed: int = 0
    llm_calls: int
    input_tokens: int
    output_tokens: int

    @property
    def failed_partitions(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.status == "failed"]

    @property
    def summary_path(self) -> Path:
        return Path(self.output_dir) / "summary" / f"{self.stage}.json"

    @property
    def failed_fraction(self) -> float:
        """The share of this run's rows that failed (0 with no rows)."""
        rows = self.rows_ok + self.rows_failed
        return self.rows_failed / rows if rows else 0.0

    def counts(self, status: str) -> int:
        return sum(1 for p in self.partitions if p.status == status)

    def describe(self) -> str:
        text = (
            f"{self.stage}: {len(self.partitions)} partition(s): {self.counts('done')} processed, "
            f"{self.counts('skipped')} unchanged, {self.counts('failed')} failed; "
            f"rows: {self.rows_ok} ok, {self.rows_failed} failed"
        )
        if self.parts_failed:
            text += f" ({self.parts_failed} part(s) of rows ok failed)"
        processed = sum(p.rows_ok for p in self.partitions if p.status == "done")
        if processed:
            calls, tokens_in, tokens_out = (
                n / processed for n in (self.llm_calls, self.input_tokens, self.output_tokens)
            )
            text += (
                f"; per row: {calls:.1f} LLM calls, {tokens_in:.0f} input + {tokens_out:.0f} output tokens"
            )
        return text

    def lines(self) -> list[str]:
        """What the CLI prints after the stage."""
        return [self.describe(), f"summary:  {self.summary_path}", f"output:   {self.output_dir}/"]


def live_partitions(output_dir: Path, stage: str) -> set[str] | None:
    """The partitions of a stage's last run (its input's partitions then), or None if it has not run here.

    Outputs of partitions that are no longer in the input stay on disk until `aidsafe prune`, but nothing
    reads them: later stages, the report, the kept rows and the exports see only the live ones.
    """
    path = output_dir / "summary" / f"{stage}.json"
    if not path.is_file():
        return None
    return {p["partition"] for p in json.loads(path.read_text())["partitions"]}


def partition_files(directory: Path, live: set[str] | None = None) -> list[Path]:
    """The partition files of an output directory (hidden files excluded), only the live ones if given."""
    if not directory.is_dir():
        return []
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    return [p for p in files if live is None or p.stem in live]


def summarize(
    stage: str,
    source: str,
    output_dir: Path,
    results: list[PartitionResult],
    settings: Settings,
    policies: PolicySet,
) -> StageSummary:
    """Sum the partitions' results and write summary/<stage>.json atomically."""
    summary = StageSummary(
        stage=stage,
        source=source,
        output_dir=str(output_dir),
        settings=settings.public(),
        policy_set=policies.hash,
        partitions=results,
        rows_ok=sum(r.rows_ok for r in results),
        rows_failed=sum(r.rows_failed for r in results),
        parts_failed=sum(r.parts_failed for r in results),
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
