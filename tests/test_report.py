"""The report, built from a fixed set of rows: every number checked by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aidsafe.charts import write_charts
from aidsafe.errors import ConfigError
from aidsafe.report import build_report, check_thresholds, metrics_table, render_markdown
from aidsafe.schemas import METRICS


def frame(
    ids: list[str], labels: list[str], scores: dict[str, list[int]], refused: list[bool]
) -> pd.DataFrame:
    data: dict[str, object] = {"id": ids, "label": labels, "refused": refused}
    for metric in METRICS:
        data[f"score_{metric}"] = scores.get(metric, [4] * len(ids))
    return pd.DataFrame(data)


@pytest.fixture
def graded() -> pd.DataFrame:
    rows = frame(
        ["a", "b", "c", "d"], ["safe", "safe", "unsafe", "unsafe"],
        {"relevance": [5, 4, 3, 4], "faithfulness_policy_cot": [5, 5, 3, 3]}, [False, True, True, True],
    )  # fmt: skip
    rows["stop_reason"] = ["complete", "complete", "budget_exhausted", "complete"]
    rows["rounds"] = [1, 1, 4, 2]
    rows["refinement_removed"] = [
        [{"reason": "redundant"}],
        [],
        [{"reason": "deceptive"}, {"reason": "redundant"}],
        [],
    ]
    return rows


@pytest.fixture
def baseline() -> pd.DataFrame:
    return frame(
        ["a", "b", "c", "e"], ["safe", "safe", "unsafe", "safe"],
        {"relevance": [3, 3, 3, 1], "faithfulness_policy_cot": [4, 4, 3, 1]}, [True, True, False, True],
    )  # fmt: skip


FAILURES = pd.DataFrame({"flow": ["generate", "baseline", "generate"], "stage": ["draft", "grade", "draft"]})


def test_means_and_deltas_compare_the_same_prompts(graded: pd.DataFrame, baseline: pd.DataFrame) -> None:
    report = build_report(graded, baseline, FAILURES, {})
    assert (report.rows_graded, report.rows_compared) == (4, 3)
    rows = {r.metric: r for r in report.metrics}
    assert rows["relevance"].aidsafe == pytest.approx(4.0) and rows["relevance"].baseline == pytest.approx(
        3.0
    )
    assert rows["relevance"].delta_pct == pytest.approx(100 / 3)
    assert rows["faithfulness_policy_cot"].aidsafe == pytest.approx(13 / 3)
    assert rows["faithfulness_policy_cot"].delta_pct == pytest.approx((13 / 3 - 11 / 3) / (11 / 3) * 100)
    table = {r["metric"]: r for r in metrics_table(report)}
    assert table["relevance"] == {
        "metric": "relevance",
        "LLM_ZS": "3.00",
        "AIDSAFE": "4.00",
        "delta": "+33.33%",
    }


def test_distributions_histograms_removals_and_failures(graded: pd.DataFrame, baseline: pd.DataFrame) -> None:
    report = build_report(graded, baseline, FAILURES, {})
    assert report.distributions["AIDSAFE"]["relevance"] == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert report.distributions["LLM_ZS"]["relevance"] == {1: 0, 2: 0, 3: 3, 4: 0, 5: 0}
    assert report.stop_reasons == {"budget_exhausted": 1, "complete": 3}
    assert report.rounds == {1: 2, 2: 1, 4: 1}
    assert report.removals == {"redundant": 2, "deceptive": 1, "policy_inconsistent": 0}
    assert report.failures == {"baseline/grade": 1, "generate/draft": 2}


def test_refusal_rates_by_label(graded: pd.DataFrame, baseline: pd.DataFrame) -> None:
    report = build_report(graded, baseline, FAILURES, {})
    assert report.refusal == {"AIDSAFE": {"safe": 0.5, "unsafe": 1.0}, "LLM_ZS": {"safe": 1.0, "unsafe": 0.0}}


def test_without_baseline_or_labels(graded: pd.DataFrame) -> None:
    report = build_report(graded.drop(columns=["label"]), None, FAILURES.iloc[:0], {})
    assert report.rows_compared == 4 and report.refusal == {} and report.failures == {}
    assert all(r.baseline is None and r.delta_pct is None for r in report.metrics)
    assert "| relevance | n/a | 4.00 | n/a |" in render_markdown(report, [])


def test_thresholds_decide_the_kept_rows(graded: pd.DataFrame) -> None:
    report = build_report(graded, None, FAILURES, check_thresholds({"faithfulness_policy_cot": 4}))
    assert report.kept == 2
    assert "Thresholds: faithfulness_policy_cot >= 4. Rows kept: 2 of 4." in render_markdown(report, [])
    with pytest.raises(ConfigError, match="unknown metric"):
        check_thresholds({"helpfulness": 3})
    with pytest.raises(ConfigError, match="between 1 and 5"):
        check_thresholds({"coherence": 6})


def test_markdown_and_charts(graded: pd.DataFrame, baseline: pd.DataFrame, tmp_path: Path) -> None:
    report = build_report(graded, baseline, FAILURES, {})
    charts = write_charts(report, tmp_path)
    assert charts == ["scores.png", "deliberation.png"]
    for name in charts:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render_markdown(report, charts)
    assert "| AIDSAFE | 50.0% | 100.0% |" in text and "![scores.png](scores.png)" in text
    assert "| relevance | LLM_ZS | 0 | 0 | 3 | 0 | 0 |" in text
