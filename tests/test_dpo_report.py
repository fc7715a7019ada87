"""The dpo numbers (attempts, success rate, margins, whisperer refusals) in the report and the CLI output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aidsafe.cli import dpo_line
from aidsafe.dpo_report import dpo_stats, read_dpo_stats
from aidsafe.report import ReportData, render_markdown
from tests.conftest import write_partition


def dpo_rows() -> list[dict[str, object]]:
    attempt = {"attempt": 1, "belief": "B.", "score_policy_cot": 1, "feedback": "F."}
    return [
        {"id": "a", "prompt": "A?", "dpo_pair": True, "dpo_outcome": "pair", "dpo_margin": 3,
         "whisper_refusals": 0, "dpo_attempts": [attempt]},
        {"id": "b", "prompt": "B?", "dpo_pair": True, "dpo_outcome": "pair", "dpo_margin": 2,
         "whisper_refusals": 2, "dpo_attempts": [attempt, attempt | {"attempt": 2}]},
        {"id": "c", "prompt": "C?", "dpo_pair": False, "dpo_outcome": "no_clear_margin", "dpo_margin": 0,
         "whisper_refusals": 0, "dpo_attempts": [attempt] * 3},
        {"id": "d", "prompt": "D?", "dpo_pair": False, "dpo_outcome": "chosen_too_low", "dpo_margin": None,
         "whisper_refusals": 0, "dpo_attempts": []},
    ]  # fmt: skip


def test_dpo_stats_count_attempts_outcomes_margins_and_refusals() -> None:
    stats = dpo_stats(pd.DataFrame(dpo_rows()))
    assert (stats.rows, stats.pairs, stats.success_rate) == (4, 2, 0.5)
    assert stats.attempts == {0: 1, 1: 1, 2: 1, 3: 1} and stats.mean_attempts == 1.5
    assert stats.margins == {0: (1, 0), 2: (1, 1), 3: (1, 1)}
    assert (stats.refusals, stats.rows_with_refusals) == (2, 1)
    assert stats.outcomes == {"pair": 2, "no_clear_margin": 1, "chosen_too_low": 1}


def test_rows_written_before_the_dpo_outcome_existed_are_counted_by_dpo_pair() -> None:
    stats = dpo_stats(pd.DataFrame([{"dpo_pair": True}, {"dpo_pair": False}]))
    assert stats.outcomes == {"pair": 1, "no_clear_margin": 1} and stats.margins == {}


def test_the_report_has_a_dpo_section_once_the_dpo_stage_has_run(tmp_path: Path) -> None:
    report = ReportData(0, 0, [], {}, {}, {}, {}, {})
    assert read_dpo_stats(tmp_path) is None and "Preference pairs" not in render_markdown(report, [])
    write_partition(tmp_path / "dpo" / "p.parquet", dpo_rows())
    report.dpo = read_dpo_stats(tmp_path)
    text = render_markdown(report, [])
    assert "## Preference pairs (dpo)" in text and "Pairs: 2 of 4 rows (50.0%); 1.50 attempts per row" in text
    assert "whisperer refusals: 2 (in 1 row)" in text and "| 3 | 1 | 1 |" in text
    assert dpo_line(tmp_path) == "pairs:    2 of 4 rows (50.0%), 1.50 attempts per row, 2 whisperer refusals"
