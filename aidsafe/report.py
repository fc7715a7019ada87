"""The run report: AIDSAFE vs the zero-shot baseline, score distributions, deliberation and refinement
statistics, failures, and (for XSTest-style labels) refusal rates. Pure computation and Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from aidsafe.errors import ConfigError
from aidsafe.schemas import METRICS

METHODS = ("AIDSAFE", "LLM_ZS")


def check_thresholds(thresholds: dict[str, int]) -> dict[str, int]:
    """Minimum score per metric; names must be metrics and values 1-5."""
    for metric, value in thresholds.items():
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r} in thresholds; metrics are {list(METRICS)}")
        if not 1 <= int(value) <= 5:
            raise ConfigError(f"threshold for {metric} must be between 1 and 5, got {value}")
    return {m: int(v) for m, v in thresholds.items()}


def keep_mask(graded: pd.DataFrame, thresholds: dict[str, int]) -> pd.Series:
    """Rows whose every thresholded score reaches its minimum."""
    mask = pd.Series(True, index=graded.index)
    for metric, minimum in thresholds.items():
        mask &= graded[f"score_{metric}"] >= minimum
    return mask


@dataclass
class MetricRow:
    metric: str
    aidsafe: float
    baseline: float | None

    @property
    def delta_pct(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return (self.aidsafe - self.baseline) / self.baseline * 100


@dataclass
class ReportData:
    rows_graded: int
    rows_compared: int
    metrics: list[MetricRow]
    distributions: dict[str, dict[str, dict[int, int]]]  # method -> metric -> score -> count
    stop_reasons: dict[str, int]
    rounds: dict[int, int]
    removals: dict[str, int]
    failures: dict[str, int]
    refusal: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> label -> rate
    kept: int = 0
    thresholds: dict[str, int] = field(default_factory=dict)


def _paired(graded: pd.DataFrame, baseline: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """With a baseline, compare on the prompts both methods graded, so the means are row by row comparable."""
    if baseline is None or baseline.empty:
        return graded, None
    common = set(graded["id"]) & set(baseline["id"])
    return graded[graded["id"].isin(common)], baseline[baseline["id"].isin(common)]


def _distribution(frame: pd.DataFrame) -> dict[str, dict[int, int]]:
    return {m: {s: int((frame[f"score_{m}"] == s).sum()) for s in range(1, 6)} for m in METRICS}


def _refusal(frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, float]] = {}
    for method, frame in frames.items():
        if "label" not in frame.columns or frame.empty:
            continue
        labelled = frame[frame["label"].isin(["safe", "unsafe"])]
        by_label = labelled.groupby("label")["refused"].mean()
        rates[method] = {str(label): float(rate) for label, rate in by_label.items()}
    return rates


def _failures(failures: pd.DataFrame, order: Sequence[str]) -> dict[str, int]:
    """Failed rows by flow and stage in pipeline order, e.g. {"generate/input": 1, "baseline/grade": 2}."""
    counts = failures.groupby([failures["flow"].astype(str), failures["stage"].astype(str)]).size()
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted(counts.index, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    return {f"{flow}/{stage}": int(counts[(flow, stage)]) for flow, stage in keys}


def build_report(
    graded: pd.DataFrame,
    baseline: pd.DataFrame | None,
    failures: pd.DataFrame,
    thresholds: dict[str, int],
    order: Sequence[str] = (),
) -> ReportData:
    """The report's numbers; order: the pipeline's step names, for failures by stage."""
    ours, theirs = _paired(graded, baseline)
    frames = {"AIDSAFE": ours} | ({"LLM_ZS": theirs} if theirs is not None else {})
    metrics = [
        MetricRow(
            m,
            float(ours[f"score_{m}"].mean()),
            float(theirs[f"score_{m}"].mean()) if theirs is not None else None,
        )
        for m in METRICS
    ]
    removals = Counter(r["reason"] for removed in graded["refinement_removed"] for r in removed)
    return ReportData(
        rows_graded=len(graded),
        rows_compared=len(ours),
        metrics=metrics,
        distributions={method: _distribution(frame) for method, frame in frames.items()},
        stop_reasons={str(k): int(v) for k, v in graded["stop_reason"].value_counts().sort_index().items()},
        rounds={int(k): int(v) for k, v in graded["rounds"].value_counts().sort_index().items()},
        removals={
            reason: removals.get(reason, 0) for reason in ("redundant", "deceptive", "policy_inconsistent")
        },
        failures=_failures(failures, order),
        refusal=_refusal(frames),
        kept=int(keep_mask(graded, thresholds).sum()),
        thresholds=thresholds,
    )


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def metrics_table(report: ReportData) -> list[dict[str, str]]:
    return [
        {
            "metric": row.metric,
            "LLM_ZS": _fmt(row.baseline),
            "AIDSAFE": _fmt(row.aidsafe),
            "delta": _fmt(row.delta_pct, "{:+.2f}%"),
        }
        for row in report.metrics
    ]


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(none)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: ReportData, charts: list[str]) -> str:
    """The report as Markdown (charts referenced by file name)."""
    parts = [
        "# aidsafe report\n",
        f"Rows graded: {report.rows_graded}; compared with the baseline: {report.rows_compared}.\n",
        "## Mean scores (1-5)\n",
        _table(metrics_table(report)),
        "## Score distributions (rows per score)\n",
        _table(_distribution_rows(report)),
        "## Deliberation\n",
        _table([{"stop reason": k, "rows": str(v)} for k, v in report.stop_reasons.items()]),
        _table([{"rounds": str(k), "rows": str(v)} for k, v in report.rounds.items()]),
        "## Refinement removals by reason\n",
        _table([{"reason": k, "thoughts removed": str(v)} for k, v in report.removals.items()]),
        "## Failures by stage\n",
        _table([{"flow/stage": k, "rows": str(v)} for k, v in report.failures.items()]),
    ]
    if report.refusal:
        parts += ["## Refusal rate by label (over-refusal on safe prompts)\n", _table(_refusal_rows(report))]
    limits = ", ".join(f"{m} >= {v}" for m, v in report.thresholds.items()) or "none"
    parts += [
        f"## Kept for training\n\nThresholds: {limits}. Rows kept: {report.kept} of {report.rows_graded}.\n"
    ]
    parts += [f"![{name}]({name})\n" for name in charts]
    return "\n".join(parts)


def _distribution_rows(report: ReportData) -> list[dict[str, str]]:
    return [
        {"metric": metric, "method": method, **{str(s): str(n) for s, n in dist[metric].items()}}
        for metric in METRICS
        for method, dist in report.distributions.items()
    ]


def _refusal_rows(report: ReportData) -> list[dict[str, str]]:
    return [
        {"method": method, **{label: f"{rate:.1%}" for label, rate in sorted(rates.items())}}
        for method, rates in report.refusal.items()
    ]
