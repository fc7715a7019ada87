"""The grader's rubric (policies/prompts/rubric.toml): what each score 1-5 of each metric means.

One table per metric of aidsafe.schemas.METRICS, each with a `question` and the keys "1".."5"; validated on
load (every metric, every score, nothing else), with errors naming the file and the key. It is rendered
into the grade prompt's system text as ${rubric}, so it is part of the grade stage's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aidsafe.errors import PolicyError
from aidsafe.schemas import METRICS

SCORES = tuple(str(score) for score in range(1, 6))


@dataclass(frozen=True)
class MetricRubric:
    """One metric: the question it answers and what each score means."""

    metric: str
    question: str
    scores: dict[int, str]


def _text(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(path, f"{key}: must be a non-empty text")
    return " ".join(value.split())


def _metric(path: Path, metric: str, table: object) -> MetricRubric:
    if not isinstance(table, dict):
        raise PolicyError(
            path, f"missing table [{metric}]" if table is None else f"{metric}: must be a table"
        )
    if unknown := set(table) - {"question", *SCORES}:
        raise PolicyError(path, f"{metric}: unknown key(s) {sorted(unknown)}; allowed: question, 1-5")
    if missing := [key for key in ("question", *SCORES) if key not in table]:
        what = "question" if missing[0] == "question" else f"description of score {missing[0]}"
        raise PolicyError(path, f"{metric}.{missing[0]}: missing {what}")
    question = _text(path, f"{metric}.question", table["question"])
    scores = {int(key): _text(path, f"{metric}.{key}", table[key]) for key in SCORES}
    return MetricRubric(metric, question, scores)


def load_rubric(path: Path, data: dict[str, object]) -> tuple[MetricRubric, ...]:
    """Validate rubric.toml (already parsed): one table per metric, in METRICS order."""
    if unknown := set(data) - set(METRICS):
        raise PolicyError(path, f"unknown metric(s) {sorted(unknown)}; metrics are {list(METRICS)}")
    return tuple(_metric(path, metric, data.get(metric)) for metric in METRICS)


def render_rubric(rubric: tuple[MetricRubric, ...]) -> str:
    """The rubric as prompt text: one line per metric, its question, then each score's meaning (compact: it
    is sent with every grading call)."""
    lines = []
    for entry in rubric:
        scores = "; ".join(f"{score} {text}" for score, text in entry.scores.items())
        lines.append(f"{entry.metric} ({entry.question}) {scores}.")
    return "\n".join(lines)
