"""The traces report: how many traces each prompt got, how many survived, how different they are, and what
each configuration contributed. Written to OUTPUT/report/traces.md and traces.json."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aidsafe.output import is_part_failure
from aidsafe.pipeline import output_files
from aidsafe.report_files import read_failures, read_files, write_stage_report
from aidsafe.trace_selection import BELOW

STAGE = "traces"


@dataclass(frozen=True)
class ConfigurationStats:
    made: int = 0
    passed: int = 0
    kept: int = 0
    failed: int = 0


@dataclass(frozen=True)
class TraceStats:
    prompts: int
    prompts_failed: int  # no trace at all (failures/traces/)
    traces_made: int
    traces_passed: int
    traces_kept: int
    kept_per_prompt: dict[str, int]  # number of kept traces -> prompts
    mean_diversity: float | None  # over the prompts with two or more kept traces
    configurations: dict[str, ConfigurationStats] = field(default_factory=dict)


def _configuration_stats(rows: pd.DataFrame, failures: pd.DataFrame) -> dict[str, ConfigurationStats]:
    counts: dict[str, Counter[str]] = {}
    for traces in rows["traces"]:
        for trace in traces:
            seen = counts.setdefault(str(trace["configuration"]), Counter())
            seen["made"] += 1
            seen["passed"] += not str(trace["dropped"] or "").startswith(BELOW)
            seen["kept"] += bool(trace["kept"])
    for stage in failures["stage"]:
        counts.setdefault(str(stage).split("/")[0], Counter())["failed"] += 1
    return {name: ConfigurationStats(**dict(c)) for name, c in sorted(counts.items())}


def trace_stats(rows: pd.DataFrame, failures: pd.DataFrame) -> TraceStats:
    """The report's numbers from the live traces rows and the traces stage's failures."""
    parts = failures[failures["stage"].astype(str).map(is_part_failure).astype(bool)]
    diversity = rows["traces_diversity"].dropna()
    kept = Counter(int(n) for n in rows["traces_kept"])
    return TraceStats(
        prompts=len(rows), prompts_failed=len(failures) - len(parts),
        traces_made=int(rows["traces_made"].sum()), traces_passed=int(rows["traces_passed"].sum()),
        traces_kept=int(rows["traces_kept"].sum()),
        kept_per_prompt={str(n): kept[n] for n in sorted(kept)},
        mean_diversity=float(diversity.mean()) if len(diversity) else None,
        configurations=_configuration_stats(rows, parts),
    )  # fmt: skip


def _value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render(stats: TraceStats) -> str:
    lines = ["# aidsafe traces", "", "| | |", "|---|---|"]
    labels = {
        "prompts": "prompts with traces", "prompts_failed": "prompts without any trace (failures/traces/)",
        "traces_made": "traces made", "traces_passed": "traces meeting the minimum scores",
        "traces_kept": "traces kept (no near-duplicates)",
        "mean_diversity": "mean pairwise diversity of the kept traces (1 - Jaccard)",
    }  # fmt: skip
    values = asdict(stats)
    lines += [f"| {label} | {_value(values[key])} |" for key, label in labels.items()]
    lines += ["", "## Kept traces per prompt", "", "| kept | prompts |", "|---|---|"]
    lines += [f"| {n} | {count} |" for n, count in stats.kept_per_prompt.items()]
    lines += ["", "## By configuration", "", "| configuration | made | passed | kept | failed |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {name} | {c.made} | {c.passed} | {c.kept} | {c.failed} |"
        for name, c in stats.configurations.items()
    ]
    return "\n".join(lines) + "\n"


def write_trace_report(output_dir: Path) -> Path | None:
    """OUTPUT/report/traces.md and .json from the live traces partitions (None: no rows yet)."""
    rows = read_files(output_files(STAGE, output_dir))
    if rows is None or not len(rows):
        return None
    failures = read_failures(output_dir)
    stats = trace_stats(rows, failures[failures["flow"] == STAGE])
    return write_stage_report(output_dir, STAGE, asdict(stats), render(stats))
