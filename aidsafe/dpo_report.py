"""The dpo stage in numbers: attempts, success rate, margins and whisperer refusals (report, dataset card)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

OUTCOME_TEXT = {
    "pair": "pair (a clearly worse answer)",
    "no_clear_margin": "no belief produced a clearly worse answer",
    "whisperer_refused": "the whisperer refused through its retries",
    "chosen_too_low": "the chosen answer's policy score leaves no room for the margin (no call)",
}


@dataclass(frozen=True)
class DpoStats:
    rows: int
    pairs: int
    attempts: dict[int, int]  # attempts made for a row -> rows
    outcomes: dict[str, int]  # dpo_outcome -> rows
    margins: dict[int, tuple[int, int]]  # chosen minus rejected policy score -> (rows, of which pairs)
    refusals: int  # whisperer replies that read as refusals
    rows_with_refusals: int

    @property
    def success_rate(self) -> float:
        return self.pairs / self.rows if self.rows else 0.0

    @property
    def mean_attempts(self) -> float:
        return sum(k * n for k, n in self.attempts.items()) / self.rows if self.rows else 0.0


def _outcomes(frame: pd.DataFrame) -> pd.Series:
    """dpo_outcome, or for rows written before it existed: pair / no clear margin."""
    fallback = frame["dpo_pair"].map({True: "pair", False: "no_clear_margin"})
    return frame["dpo_outcome"].fillna(fallback) if "dpo_outcome" in frame.columns else fallback


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or nulls for rows written before it existed."""
    return frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)


def _margins(frame: pd.DataFrame) -> dict[int, tuple[int, int]]:
    with_margin = frame.assign(margin=_column(frame, "dpo_margin")).dropna(subset=["margin"])
    groups = with_margin.groupby("margin")["dpo_pair"]
    return {int(m): (len(g), int(g.sum())) for m, g in sorted(groups, key=lambda item: item[0])}


def dpo_stats(frame: pd.DataFrame) -> DpoStats:
    """The numbers of some dpo rows (OUTPUT/dpo)."""
    attempts = _column(frame, "dpo_attempts").map(lambda a: 0 if a is None else len(a))
    refusals = _column(frame, "whisper_refusals").fillna(0).astype(int)
    return DpoStats(
        rows=len(frame),
        pairs=int(frame["dpo_pair"].sum()),
        attempts={int(k): int(v) for k, v in attempts.value_counts().sort_index().items()},
        outcomes={str(k): int(v) for k, v in _outcomes(frame).value_counts().items()},
        margins=_margins(frame),
        refusals=int(refusals.sum()),
        rows_with_refusals=int((refusals > 0).sum()),
    )


def read_dpo_stats(output_dir: Path) -> DpoStats | None:
    """The numbers of a run's live dpo partitions, or None when the dpo stage has not run there."""
    from aidsafe.pipeline import output_files  # the pipeline imports every stage: only when reading
    from aidsafe.report_files import read_files

    frame = read_files(output_files("dpo", output_dir))
    return None if frame is None else dpo_stats(frame)


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def dpo_markdown(stats: DpoStats, heading: str = "##") -> str:
    """The dpo section: success rate, outcomes, attempts per row, margins and refusals."""
    outcomes = [(OUTCOME_TEXT.get(k, k), n) for k, n in sorted(stats.outcomes.items())]
    margins = [(m, n, pairs) for m, (n, pairs) in stats.margins.items()]
    return "\n".join(
        [
            f"{heading} Preference pairs (dpo)\n",
            f"Pairs: {stats.pairs} of {stats.rows} rows ({stats.success_rate:.1%}); "
            f"{stats.mean_attempts:.2f} attempts per row; whisperer refusals: {stats.refusals} "
            f"(in {stats.rows_with_refusals} row{'' if stats.rows_with_refusals == 1 else 's'}).\n",
            _table(("outcome", "rows"), outcomes),
            _table(("attempts", "rows"), list(stats.attempts.items())),
            "Margin: chosen minus rejected CoT policy faithfulness (each row's last attempt).\n",
            _table(("margin", "rows", "pairs"), margins) if margins else "(no attempt)\n",
        ]
    )
