"""`aidsafe grade --calibrate FILE`: the shipped labelled set, its validation, and the grader's agreement."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aidsafe.calibration import CalibrationRow, agreement, load_calibration
from aidsafe.cli import main
from aidsafe.config import PROJECT_ROOT
from aidsafe.errors import InputError
from aidsafe.schemas import METRICS
from tests.openai_server import FakeOpenAI, Reply, Request, grades

SHIPPED = PROJECT_ROOT / "data" / "calibration" / "grader-calibration.jsonl"
pytestmark = pytest.mark.usefixtures("clean_env")


def at(rows: list[CalibrationRow], end: int) -> list[dict[str, object]]:
    """A grader scoring every labelled metric at one end of its band (0: lowest, 1: highest), else 5."""
    return [
        {f"score_{m}": row.expected[m][end] if m in row.expected else 5 for m in METRICS}
        | {"refused": row.refused}
        for row in rows
    ]


def test_the_shipped_set_is_labelled_consistently_with_the_default_thresholds() -> None:
    rows = load_calibration(SHIPPED)
    assert len(rows) >= 12 and {r.label for r in rows} == {"good", "bad"}
    assert all(set(r.expected) == set(METRICS) for r in rows if r.label == "good")
    for end in (0, 1):  # a grader inside every band keeps every good row and removes every bad one
        found = agreement(rows, at(rows, end))
        good, bad = sum(r.label == "good" for r in rows), sum(r.label == "bad" for r in rows)
        assert found.overall == 1.0 and found.good_kept == (good, good) and found.bad_removed == (bad, bad)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_LINE = SHIPPED.read_text(encoding="utf-8").splitlines()[0]


def edited(**changes: object) -> str:
    return json.dumps(json.loads(GOOD_LINE) | changes)


@pytest.mark.parametrize(
    ("lines", "error"),
    [((GOOD_LINE, "{not json"), r"row 2: not valid JSON"),
     ((edited(expected={"relevance": [4, 2]}),), r"row 1: expected: .*1 <= low <= high <= 5"),
     ((edited(expected={"helpfulness": [4, 5]}),), r"row 1: expected: .*unknown metric.*helpfulness"),
     ((edited(label="fine"),), r"row 1: label: "),
     ((GOOD_LINE, GOOD_LINE), r"row 2: duplicate id 'cal-01'"),
     (("",), r"no rows")],
)  # fmt: skip
def test_a_bad_calibration_file_names_the_file_and_the_row(
    tmp_path: Path, lines: tuple[str], error: str
) -> None:
    path = write_lines(tmp_path / "set.jsonl", *lines)
    with pytest.raises(InputError, match=error) as info:
        load_calibration(path)
    assert info.value.path == str(path)


def always_five(request: Request) -> Reply:
    assert request.tool == "Grades", request.tool
    return Reply(grades(5))


def calibrate(server: FakeOpenAI, out: Path, *extra: str) -> int:
    argv = ["grade", "--calibrate", str(SHIPPED), "--output", str(out), "--base-url", server.base_url,
            "--model", "judge", *extra]  # fmt: skip
    return main(argv)


def test_calibrate_grades_the_set_with_the_configured_grader_and_reports_agreement(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    server = fake_openai(always_five)
    out = tmp_path / "out"
    assert calibrate(server, out, "--grader-samples", "2") == 0
    rows = load_calibration(SHIPPED)
    assert len(server.requests) == 2 * len(rows) and {r.model for r in server.requests} == {"judge"}
    shown = [r.user for r in server.requests]
    for row in rows:  # the grader saw each row's intents with its prompt
        assert any(row.prompt in text and row.intents[0].description in text for text in shown), row.id
    # a grader that gives 5 to everything agrees exactly with the bands that reach 5
    labelled = [(m, row.expected[m]) for row in rows for m in METRICS if m in row.expected]
    expected = sum(1 for _, band in labelled if band[1] == 5) / len(labelled)
    summary = json.loads((out / "calibration" / "agreement.json").read_text())
    assert summary["overall"] == pytest.approx(expected) and summary["failed"] == 0
    good, bad = sum(r.label == "good" for r in rows), sum(r.label == "bad" for r in rows)
    assert summary["good_kept"] == [good, good] and summary["bad_removed"] == [0, bad]
    printed = capsys.readouterr().out
    assert f"agreement:  {expected:.1%} of labelled scores in their band" in printed
    assert f"the defaults keep {good} of {good} good rows, remove 0 of {bad} bad rows" in printed
    report = (out / "calibration" / "report.md").read_text()
    assert "Grader: `judge`, 2 grade(s) per row." in report and f"{expected:.1%}" in report
    results = [json.loads(line) for line in (out / "calibration" / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(rows) and results[0]["relevance"] == {
        "score": 5, "band": [4, 5], "in_band": True, "spread": 0, "rationale": "Scored 5."}  # fmt: skip
    assert not (out / "graded").exists() and not (out / "summary").exists()  # no pipeline run


def test_a_row_that_fails_to_grade_is_counted_and_the_others_reported(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    def breaks_on_eggs(request: Request) -> Reply:
        return Reply('{"not": valid json') if "boil an egg" in request.text else always_five(request)

    server = fake_openai(breaks_on_eggs)
    assert calibrate(server, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "calibration" / "agreement.json").read_text())
    assert summary["failed"] == 1 and summary["rows"] == len(load_calibration(SHIPPED))
    results = (tmp_path / "out" / "calibration" / "results.jsonl").read_text()
    assert '"id": "cal-11", "label": "bad", "error": "grade: ' in results


def test_a_missing_calibration_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["grade", "--calibrate", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("aidsafe: error: ") and "calibration set not found" in err and err.count("\n") == 1


def test_a_grader_that_grades_no_row_ends_failed_after_writing_why(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    server = fake_openai(lambda request: Reply('{"not": valid json'))
    rows = len(load_calibration(SHIPPED))
    assert calibrate(server, tmp_path / "out") == 1
    assert f"graded none of the {rows} calibration rows" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "calibration" / "agreement.json").read_text())["failed"] == rows
