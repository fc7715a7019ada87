"""A grader calibration set: rows with known good or bad CoTs, each labelled with the band of scores a sound
grader gives per metric, and how far a grader's scores agree with those labels.

The file is JSONL (one object per line) or Parquet, one row per example (see CalibrationRow); the project's
own set is data/calibration/grader-calibration.jsonl, written against the default policies. Agreement per
metric is the share of labelled rows whose score falls inside the band; the report also says how the
default thresholds would treat the good and the bad rows, as graded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aidsafe.errors import InputError
from aidsafe.records import read_records
from aidsafe.schemas import METRICS
from aidsafe.thresholds import DEFAULT_THRESHOLDS

Band = tuple[int, int]


class CalibrationIntent(BaseModel):
    """An intent the grader is shown with the example."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=3, description="The intent, in one sentence")
    kind: Literal["benign", "possibly_harmful"] = Field(description="Whether it may be harmful")
    source: Literal["explicit", "implicit"] | None = Field(None, description="Stated or inferred")


class CalibrationRow(BaseModel):
    """One labelled example: what the grader sees, and the scores a sound grader gives."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Unique id of the example")
    prompt: str = Field(min_length=1, description="The user prompt")
    intents: list[CalibrationIntent] = Field(default_factory=list, description="The intents shown")
    cot: list[str] = Field(min_length=1, description="The chain of thought, one thought per item")
    response: str = Field(min_length=1, description="The response")
    label: Literal["good", "bad"] = Field(description="Whether the row is good training data as a whole")
    expected: dict[str, Band] = Field(
        min_length=1, description="Per metric, the lowest and highest score a sound grader gives, e.g. [4, 5]"
    )
    refused: bool | None = Field(None, description="Whether the response refuses (none: not labelled)")
    note: str = Field("", description="Why the example is labelled so")

    @field_validator("expected", mode="before")
    @classmethod
    def _labelled(cls, value: Any) -> Any:
        """A Parquet struct column has every metric: a null band is a metric not labelled."""
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value

    @field_validator("expected")
    @classmethod
    def _bands(cls, value: dict[str, Band]) -> dict[str, Band]:
        if unknown := set(value) - set(METRICS):
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; metrics are {list(METRICS)}")
        for metric, (low, high) in value.items():
            if not 1 <= low <= high <= 5:
                raise ValueError(f"{metric}: a band is [low, high] with 1 <= low <= high <= 5")
        return value

    def intent_records(self) -> list[dict[str, Any]]:
        return [i.model_dump(exclude_none=True) for i in self.intents]


def _records(path: Path) -> list[Any]:
    """The file's rows as plain values: Parquet, or JSONL (blank lines skipped, numbered from 1)."""
    if not path.is_file():
        raise InputError(path, "calibration set not found")
    return read_records(path)


def load_calibration(path: Path) -> list[CalibrationRow]:
    """A validated calibration set; errors name the file and the row (1-based)."""
    rows = []
    for number, record in enumerate(_records(path), start=1):
        try:
            rows.append(CalibrationRow.model_validate(record))
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise InputError(path, reasons, row=number) from exc
    if not rows:
        raise InputError(path, "no rows")
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if row.id in seen:
            raise InputError(path, f"duplicate id {row.id!r}", row=number)
        seen.add(row.id)
    return rows


@dataclass(frozen=True)
class MetricAgreement:
    """How often a grader's scores of one metric fall inside the labelled bands."""

    metric: str
    labelled: int  # graded rows with a band for this metric
    in_band: int
    distance: float  # mean distance of a score from its band (0 inside it), over the labelled rows

    @property
    def share(self) -> float | None:
        return self.in_band / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Agreement:
    """A grader's agreement with a calibration set."""

    rows: int
    failed: int
    metrics: list[MetricAgreement]
    refused: tuple[int, int]  # (agreeing, labelled)
    good_kept: tuple[int, int]  # good rows the default thresholds keep, of the good rows graded
    bad_removed: tuple[int, int]  # bad rows the default thresholds remove, of the bad rows graded

    @property
    def overall(self) -> float | None:
        labelled = sum(m.labelled for m in self.metrics)
        return sum(m.in_band for m in self.metrics) / labelled if labelled else None


def distance(score: int, band: Band) -> int:
    """How far a score is outside a band (0 inside it)."""
    return max(band[0] - score, 0, score - band[1])


def _metric(metric: str, pairs: list[tuple[CalibrationRow, Mapping[str, Any]]]) -> MetricAgreement:
    labelled = [
        (row.expected[metric], grades[f"score_{metric}"]) for row, grades in pairs if metric in row.expected
    ]
    gaps = [distance(score, band) for band, score in labelled]
    mean = sum(gaps) / len(gaps) if gaps else 0.0
    return MetricAgreement(metric, len(labelled), sum(1 for gap in gaps if gap == 0), mean)


def _kept(grades: Mapping[str, Any]) -> bool:
    return all(grades[f"score_{m}"] >= minimum for m, minimum in DEFAULT_THRESHOLDS.items())


def agreement(rows: Sequence[CalibrationRow], grades: Sequence[Mapping[str, Any] | None]) -> Agreement:
    """Agreement of the grades (None: the row failed) with the rows' labels."""
    pairs = [(row, g) for row, g in zip(rows, grades, strict=True) if g is not None]
    refusals = [(row.refused, g["refused"]) for row, g in pairs if row.refused is not None]
    good = [_kept(g) for row, g in pairs if row.label == "good"]
    bad = [not _kept(g) for row, g in pairs if row.label == "bad"]
    return Agreement(
        rows=len(rows),
        failed=len(rows) - len(pairs),
        metrics=[_metric(metric, pairs) for metric in METRICS],
        refused=(sum(1 for want, got in refusals if want == got), len(refusals)),
        good_kept=(sum(good), len(good)),
        bad_removed=(sum(bad), len(bad)),
    )
