"""The run report: AIDSAFE vs the zero-shot baseline, score distributions, deliberation and refinement
statistics, failures, (for XSTest-style labels) refusal rates, self-grading, the grader's spread over
repeated grades and the rows each score threshold removed. Pure computation and Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from aidsafe.dpo_report import DpoStats, dpo_markdown
from aidsafe.schemas import METRICS
from aidsafe.self_grading import SelfGrading, self_grading, warning
from aidsafe.thresholds import are_defaults
from aidsafe.thresholds import check_thresholds as check_thresholds  # re-exported

METHODS = ("AIDSAFE", "LLM_ZS")


def keep_mask(graded: pd.DataFrame, thresholds: dict[str, int]) -> pd.Series:
    """Rows whose every thresholded score reaches its minimum."""
    mask = pd.Series(True, index=graded.index)
    for metric, minimum in thresholds.items():
        mask &= graded[f"score_{metric}"] >= minimum
    return mask


def removed_by(graded: pd.DataFrame, thresholds: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per threshold: the rows below it, and the rows below it alone (kept but for this threshold)."""
    below = {m: graded[f"score_{m}"] < minimum for m, minimum in thresholds.items()}
    counts = sum((b.astype(int) for b in below.values()), pd.Series(0, index=graded.index))
    return {m: (int(b.sum()), int((b & (counts == 1)).sum())) for m, b in below.items()}


def scores(frame: pd.DataFrame, metric: str) -> pd.Series:
    """A metric's scores: the mean of the grades where the rows have it (grader_samples), else the score."""
    column = frame[f"score_{metric}"].astype(float)
    mean = f"score_mean_{metric}"
    return frame[mean].astype(float).fillna(column) if mean in frame.columns else column


@dataclass
class SpreadRow:
    """The grader's spread over its repeated grades of one metric (rows graded more than once)."""

    metric: str
    rows: int
    mean_spread: float
    max_spread: int
    disagreeing: int  # rows whose grades differ by 2 or more


def spread_rows(frame: pd.DataFrame) -> list[SpreadRow]:
    """Spread per metric over the rows graded several times (none when every row was graded once)."""
    found = []
    for metric in METRICS:
        column = f"score_spread_{metric}"
        spread = frame[column].dropna() if column in frame.columns else pd.Series(dtype=float)
        if not spread.empty:
            found.append(SpreadRow(metric, len(spread), float(spread.mean()), int(spread.max()),
                                   int((spread >= 2).sum())))  # fmt: skip
    return found


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
    removed: dict[str, tuple[int, int]] = field(default_factory=dict)  # threshold -> (below, below it alone)
    self_graded: dict[str, SelfGrading] = field(default_factory=dict)  # method -> its self-graded rows
    spread: list[SpreadRow] = field(default_factory=list)
    dpo: DpoStats | None = None  # OUTPUT/dpo as the last `aidsafe dpo` left it (None: it has not run)


def _paired(graded: pd.DataFrame, baseline: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """With a baseline, compare on the prompts both methods graded, so the means are row by row comparable."""
    if baseline is None or baseline.empty:
        return graded, None
    common = set(graded["id"]) & set(baseline["id"])
    return graded[graded["id"].isin(common)], baseline[baseline["id"].isin(common)]


def _distribution(frame: pd.DataFrame) -> dict[str, dict[int, int]]:
    return {m: {s: int((frame[f"score_{m}"] == s).sum()) for s in range(1, 6)} for m in METRICS}


def _self_graded(frames: dict[str, pd.DataFrame]) -> dict[str, SelfGrading]:
    return {method: found for method, frame in frames.items() if (found := self_grading(frame)).found}


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
            m, float(scores(ours, m).mean()), float(scores(theirs, m).mean()) if theirs is not None else None
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
        removed=removed_by(graded, thresholds),
        self_graded=_self_graded(
            {"AIDSAFE": graded} | ({"LLM_ZS": baseline} if baseline is not None else {})
        ),
        spread=spread_rows(graded),
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
        *(f"> {warning(found, WHAT[method])}\n" for method, found in report.self_graded.items()),
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
    if report.spread:
        parts += ["## Grader spread over repeated grades (grader_samples)\n", _table(_spread_rows(report))]
    parts += _kept_section(report)
    parts += [dpo_markdown(report.dpo)] if report.dpo is not None else []
    parts += [f"![{name}]({name})\n" for name in charts]
    return "\n".join(parts)


WHAT = {"AIDSAFE": "graded rows", "LLM_ZS": "baseline (LLM_ZS) rows"}


def _kept_section(report: ReportData) -> list[str]:
    limits = ", ".join(f"{m} >= {v}" for m, v in report.thresholds.items()) or "none"
    which = (
        "These are the default thresholds: `--min-score METRIC=N` changes one, `--min-score none` keeps "
        "every graded row." if are_defaults(report.thresholds)
        else "No thresholds (`--min-score none`): every graded row is kept." if not report.thresholds
        else "Not the default thresholds (see `--min-score`)."
    )  # fmt: skip
    rows = [
        {"threshold": f"{m} >= {report.thresholds[m]}", "rows below": str(below),
         "removed by it alone": str(alone)}
        for m, (below, alone) in report.removed.items()
    ]  # fmt: skip
    removed = report.rows_graded - report.kept
    return [
        f"## Kept for training\n\nThresholds: {limits}. Rows kept: {report.kept} of {report.rows_graded}.\n",
        f"{which} Rows removed: {removed}"
        + (", by threshold (a row below several counts in each):\n" if rows else ".\n"),
        *([_table(rows)] if rows else []),
    ]


def _spread_rows(report: ReportData) -> list[dict[str, str]]:
    return [
        {"metric": r.metric, "rows": str(r.rows), "mean spread": f"{r.mean_spread:.2f}",
         "max spread": str(r.max_spread), "rows spread >= 2": str(r.disagreeing)}
        for r in report.spread
    ]  # fmt: skip


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
