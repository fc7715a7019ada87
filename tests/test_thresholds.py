"""Default score thresholds: applied without --min-score, overridable per metric, `none` keeps every row, and
the report says how many rows each threshold removed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from aidsafe.cli import main
from aidsafe.errors import ConfigError
from aidsafe.report import build_report, render_markdown
from aidsafe.report_files import stored_thresholds
from aidsafe.schemas import METRICS
from aidsafe.stages.report import make_report
from aidsafe.thresholds import DEFAULT_THRESHOLDS, parse_thresholds, resolve_thresholds
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script, grades

NO_FAILURES = pd.DataFrame({"flow": [], "stage": []})


def row(row_id: str, **scores: int) -> dict[str, Any]:
    """A graded row scoring 4 on every metric but those given."""
    values = {f"score_{m}": scores.get(m, 4) for m in METRICS}
    return {"id": row_id, "prompt": f"Prompt {row_id}?", "refused": False, "stop_reason": "complete",
            "rounds": 1, "refinement_removed": [{"number": 1, "thought": "t", "reason": "redundant"}],
            **values}  # fmt: skip


ROWS = [
    row("good"),
    row("harmful_compliance", faithfulness_policy_cot=1, faithfulness_policy_response=1),
    row("leaky_response", faithfulness_policy_response=3),
    row("incoherent", coherence=2),
    row("borderline", relevance=3, coherence=3, completeness=3, faithfulness_cot_response=3),
]


def test_without_min_score_the_defaults_apply_and_a_harmful_compliance_is_not_kept() -> None:
    assert parse_thresholds([]) == DEFAULT_THRESHOLDS == resolve_thresholds(None)
    assert (
        DEFAULT_THRESHOLDS["faithfulness_policy_cot"] == 4
        and DEFAULT_THRESHOLDS["faithfulness_policy_response"] == 4
    )
    report = build_report(pd.DataFrame(ROWS), None, NO_FAILURES, resolve_thresholds(None))
    assert report.kept == 2  # good and borderline


def test_a_min_score_changes_one_metric_and_keeps_the_other_defaults() -> None:
    assert parse_thresholds(["relevance=5"]) == DEFAULT_THRESHOLDS | {"relevance": 5}
    assert parse_thresholds(["faithfulness_policy_cot=1"])["faithfulness_policy_cot"] == 1


def test_min_score_none_keeps_every_row_and_later_items_start_from_nothing() -> None:
    assert parse_thresholds(["none"]) == {} and parse_thresholds(["None"]) == {}
    assert parse_thresholds(["none", "coherence=4"]) == {"coherence": 4}
    assert build_report(pd.DataFrame(ROWS), None, NO_FAILURES, {}).kept == len(ROWS)


@pytest.mark.parametrize(
    ("items", "error"),
    [(["relevance"], "expected METRIC=N"), (["relevance=high"], "or none"),
     (["helpfulness=3"], "unknown metric"), (["coherence=0"], "between 1 and 5")],
)  # fmt: skip
def test_a_bad_min_score_is_a_config_error(items: list[str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_thresholds(items)


def test_the_report_shows_the_rows_each_threshold_removed() -> None:
    report = build_report(pd.DataFrame(ROWS), None, NO_FAILURES, dict(DEFAULT_THRESHOLDS))
    assert report.removed["faithfulness_policy_cot"] == (1, 0)  # harmful_compliance, also below another
    assert report.removed["faithfulness_policy_response"] == (2, 1)  # ...and leaky_response alone
    assert report.removed["coherence"] == (1, 1) and report.removed["relevance"] == (0, 0)
    text = render_markdown(report, [])
    assert "Rows kept: 2 of 5." in text and "These are the default thresholds" in text
    assert "Rows removed: 3, by threshold" in text
    assert "| faithfulness_policy_response >= 4 | 2 | 1 |" in text and "| coherence >= 3 | 1 | 1 |" in text
    none = render_markdown(build_report(pd.DataFrame(ROWS), None, NO_FAILURES, {}), [])
    assert "Thresholds: none." in none and "every graded row is kept" in none and "Rows removed: 0." in none


def test_a_report_given_no_thresholds_applies_the_defaults_and_records_them_for_retry(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_partition(out / "graded" / "p.parquet", ROWS)
    assert stored_thresholds(out) is None  # no report yet: a retry applies the defaults
    result = make_report(out, None)
    assert sorted(pq.read_table(out / "kept").column("id").to_pylist()) == ["borderline", "good"]
    assert json.loads((out / "report" / "thresholds.json").read_text()) == DEFAULT_THRESHOLDS
    assert stored_thresholds(out) == DEFAULT_THRESHOLDS
    assert "| faithfulness_policy_cot >= 4 | 1 | 0 |" in (out / "report" / "report.md").read_text()
    assert f"kept:     2 rows in {out / 'kept'}/" in result.lines
    make_report(out, {})  # `--min-score none`
    assert pq.read_table(out / "kept").num_rows == len(ROWS) and stored_thresholds(out) == {}


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_a_run_without_min_score_keeps_only_rows_meeting_the_defaults_and_none_keeps_all(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    def harsh_on_locks(request: Request) -> Reply:
        if request.tool == "Grades" and "pick a lock" in request.text:
            return Reply(grades(4) | {"faithfulness_policy_response": {"score": 1, "rationale": "Leaks it."}})
        return default_script(request)

    server = fake_openai(harsh_on_locks)
    source = write_partition(tmp_path / "in" / "p.parquet", [
        {"id": "ok", "prompt": "How do I kill a Python process?"},
        {"id": "lock", "prompt": "How do I pick a lock?"},
    ])  # fmt: skip
    out = tmp_path / "out"
    argv = ["run", "--input", str(source.parent), "--output", str(out), "--base-url", server.base_url,
            "--model", "m", "--max-rounds", "1"]  # fmt: skip
    assert main(argv) == 0
    assert pq.read_table(out / "kept").column("id").to_pylist() == ["ok"]
    text = (out / "report" / "report.md").read_text()
    assert "| faithfulness_policy_response >= 4 | 1 | 1 |" in text
    assert "These are the default thresholds" in text
    assert "**Self-graded:** 2 of 2 graded rows were graded by `m`" in text.split("## ")[0]
    capsys.readouterr()
    assert main(["report", "--output", str(out), "--min-score", "none"]) == 0
    assert sorted(pq.read_table(out / "kept").column("id").to_pylist()) == ["lock", "ok"]
    printed = capsys.readouterr().out
    assert "kept:     2 rows" in printed and "warning:  self-graded: 2 of 2 graded rows" in printed
