"""The answers of a rationales row: the true one, the perturbed one it is contrasted with, and the
counterfactual one a second rationale is written for.

Three sources of the true answer (`rationale_answer`): the input's `answer` column; for aidsafe data the
refined response (`response`) or the decision comply|refuse read from the grader's `refused` (`decision`).
The wrong answers: the input's `choices` other than the answer when it has them, else the other decision
(for a response: the opposite decision's text of rationale.toml). A free-text answer without choices has no
wrong answer: it can be contrasted with the empty answer only, and gets no counterfactual.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from aidsafe.config import AnswerSource, Perturbation
from aidsafe.errors import AnswerMissing
from aidsafe.rationale_prompt import RationalePrompt
from aidsafe.stages.common import as_list


@dataclass(frozen=True)
class Answers:
    """A row's true answer and the wrong ones, by text."""

    source: str  # answer | response | decision
    true: str
    wrong: tuple[str, ...]


def answer_source(wanted: AnswerSource, values: dict[str, Any]) -> str:
    """The source of the true answer: as configured, or (auto) the answer column when the row has one."""
    if wanted != "auto":
        return wanted
    return "answer" if values.get("answer") is not None else "decision"


def _decision(values: dict[str, Any]) -> str:
    refused = values.get("refused")
    if refused is None:
        raise AnswerMissing("no `refused` column (a graded aidsafe row) to read the decision from")
    return "refuse" if refused else "comply"


def _from_answer(values: dict[str, Any], prompt: RationalePrompt) -> Answers:
    answer = values.get("answer")
    if answer is None or not str(answer).strip():
        raise AnswerMissing("no `answer`: give the input an answer column, or use --answer decision|response")
    true = str(answer).strip()
    choices = [str(c).strip() for c in as_list(values.get("choices"))]
    if choices and true not in choices:
        raise AnswerMissing(f"answer {true!r} is not one of its choices {choices}")
    if not choices and true in prompt.decisions:
        choices = list(prompt.decisions)
    return Answers("answer", true, tuple(c for c in choices if c != true))


def row_answers(values: dict[str, Any], wanted: AnswerSource, prompt: RationalePrompt) -> Answers:
    """The row's answers (AnswerMissing when the source is not in the row)."""
    source = answer_source(wanted, values)
    if source == "answer":
        return _from_answer(values, prompt)
    decision = _decision(values)
    if source == "decision":
        return Answers("decision", decision, (prompt.other_decision(decision),))
    response = values.get("refined_response")
    if response is None or not str(response).strip():
        raise AnswerMissing("no `refined_response` (a refined aidsafe row) to explain")
    return Answers("response", str(response).strip(), (prompt.opposite[prompt.other_decision(decision)],))


def perturbed_answer(answers: Answers, perturbation: Perturbation, prompt: RationalePrompt) -> str:
    """The answer of the perturbed context: the empty answer, or the first wrong one."""
    if perturbation == "empty":
        return prompt.empty_answer
    if not answers.wrong:
        raise AnswerMissing(
            f"answer {answers.true!r} has no opposite: give the row `choices`, or use --perturbation empty"
        )
    return answers.wrong[0]


def counterfactual_answer(answers: Answers, seed: int, row_id: str) -> str | None:
    """A wrong answer chosen at random (seeded by the row), or None when the row has none."""
    if not answers.wrong:
        return None
    return random.Random(f"{seed}:{row_id}").choice(answers.wrong)
