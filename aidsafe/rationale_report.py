"""The rationales report: what the teacher wrote, at what cost, and whether the rationales say anything.

Faithfulness, cheaply (Hase et al.'s leakage-adjusted simulatability): the simulator picks the answer from the
rationale alone and from the question alone. The gain is the accuracy with the rationale minus the accuracy
without it, averaged over two groups of rows: those where the question alone gives the answer away (it was
picked from the question) and those where it does not, so that easy questions do not hide empty rationales.
Written to OUTPUT/report/rationales.md and rationales.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from aidsafe.pipeline import output_files
from aidsafe.report_files import read_failures, read_files, write_stage_report

STAGE = "rationales"


def leakage_adjusted_gain(with_rationale: pd.Series, question_only: pd.Series) -> float | None:
    """Mean over the leaking and the non-leaking rows of (accuracy with rationale - accuracy without)."""
    frame = pd.DataFrame({"r": with_rationale, "q": question_only}).dropna().astype(bool)
    gains = [float(g["r"].mean() - g["q"].mean()) for _, g in frame.groupby("q") if len(g)]
    return sum(gains) / len(gains) if gains else None


@dataclass(frozen=True)
class RationaleStats:
    rows: int
    failed: int
    mode: list[str]
    perturbation: list[str]
    mean_tokens: float | None
    seconds_per_row: float | None
    tokens_per_second: float | None
    mean_gap: float | None
    stops: dict[str, int]
    counterfactual_rows: int
    simulated_rows: int
    accuracy_with_rationale: float | None
    accuracy_question_only: float | None
    leakage_adjusted_gain: float | None
    counterfactual_followed: float | None


def _mean(series: pd.Series) -> float | None:
    values = series.dropna()
    return round(float(values.mean()), 4) if len(values) else None


def _speed(rows: pd.DataFrame) -> tuple[float | None, float | None]:
    """Teacher seconds per row (both rationales) and tokens per second of decoding."""
    seconds = rows["rationale_seconds"].fillna(0) + rows["counterfactual_seconds"].fillna(0)
    tokens = rows["rationale_tokens"].fillna(0) + rows["counterfactual_tokens"].fillna(0)
    total = float(seconds.sum())
    return round(total / len(rows), 3), (round(float(tokens.sum()) / total, 2) if total else None)


def rationale_stats(rows: pd.DataFrame, failed: int) -> RationaleStats:
    per_row, per_token = _speed(rows)
    simulated = rows.dropna(subset=["simulated_with_rationale", "simulated_question_only"])
    return RationaleStats(
        rows=len(rows), failed=failed,
        mode=sorted(rows["rationale_mode"].dropna().unique()),
        perturbation=sorted(rows["rationale_perturbation"].dropna().unique()),
        mean_tokens=_mean(rows["rationale_tokens"]), seconds_per_row=per_row, tokens_per_second=per_token,
        mean_gap=_mean(rows["rationale_gap"]),
        stops={str(k): int(v) for k, v in rows["rationale_stop"].value_counts().items()},
        counterfactual_rows=int(rows["counterfactual_rationale"].notna().sum()),
        simulated_rows=len(simulated),
        accuracy_with_rationale=_mean(simulated["simulated_with_rationale"].astype(float)),
        accuracy_question_only=_mean(simulated["simulated_question_only"].astype(float)),
        leakage_adjusted_gain=leakage_adjusted_gain(
            simulated["simulated_with_rationale"], simulated["simulated_question_only"]
        ),
        counterfactual_followed=_mean(rows["simulated_counterfactual"].dropna().astype(float)),
    )  # fmt: skip


def _value(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(stats: RationaleStats) -> str:
    lines = ["# aidsafe rationales", "", "| | |", "|---|---|"]
    labels = {
        "rows": "rows", "failed": "failed rows (failures/rationales/)", "mode": "decoding",
        "perturbation": "perturbation", "mean_tokens": "tokens per rationale",
        "seconds_per_row": "teacher seconds per row (both rationales)", "tokens_per_second": "tokens/s",
        "mean_gap": "mean log-prob gap true - perturbed (nats)", "stops": "rationale ends",
        "counterfactual_rows": "counterfactual rationales", "simulated_rows": "rows simulated",
        "accuracy_with_rationale": "simulator accuracy, rationale alone",
        "accuracy_question_only": "simulator accuracy, question alone",
        "leakage_adjusted_gain": "**leakage-adjusted gain**",
        "counterfactual_followed": "counterfactual rationales that lead to their (wrong) answer",
    }  # fmt: skip
    values = asdict(stats)
    lines += [f"| {label} | {_value(values[key])} |" for key, label in labels.items()]
    lines += ["", "The gain is the simulator's accuracy from the rationale alone minus from the question "
              "alone, averaged over the rows the question alone gives away and those it does not; above 0: "
              "the rationales carry the answer beyond what the question tells."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_rationale_report(output_dir: Path) -> Path | None:
    """OUTPUT/report/rationales.md and .json from the live rationales partitions (None: no rows yet)."""
    rows = read_files(output_files(STAGE, output_dir))
    if rows is None or not len(rows):
        return None
    failures = read_failures(output_dir)
    stats = rationale_stats(rows, int((failures["flow"] == STAGE).sum()))
    return write_stage_report(output_dir, STAGE, asdict(stats), render(stats))
