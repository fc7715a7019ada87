"""Structured row values as prompt text: the one place that formats CoTs, intents, histories and attempts.

Every item of a list becomes exactly one line (line breaks inside an item are folded to spaces), so the
text of one item can never look like the next item or shift the numbering of the items after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphs.protocol import Value

__all__ = ["PLACEHOLDERS", "Value", "attempts", "cot", "history", "intents", "one_line", "variable"]
# The variables whose empty value is shown as a placeholder text (fragments.toml key per variable).
PLACEHOLDERS = {"history": "no_history", "attempts": "no_attempts"}


def one_line(text: object) -> str:
    """An item's text on one line: any run of whitespace (line breaks included) becomes one space."""
    return " ".join(str(text).split())


def cot(thoughts: Sequence[str]) -> str:
    """Numbered thoughts, one per line, numbered by position in the list."""
    return "\n".join(f"{n}. {one_line(t)}" for n, t in enumerate(thoughts, start=1))


def intents(items: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"- [{i['kind']}] {one_line(i['description'])}" for i in items)


def history(turns: Sequence[Mapping[str, Any]], empty: str) -> str:
    """The deliberation log so far, one turn per line; `empty` when no agent has reviewed yet."""
    if not turns:
        return empty
    return "\n".join(
        f"turn {t['turn']} by {t['agent']}: {t['verdict']}: {one_line(t['feedback'])}" for t in turns
    )


def attempts(items: Sequence[Mapping[str, Any]], empty: str) -> str:
    """The whisperer's earlier attempts with the grader's feedback, one per line; `empty` before the first."""
    if not items:
        return empty
    return "\n".join(
        f"attempt {a['attempt']}: belief: {one_line(a['belief'])} -> policy faithfulness "
        f"{a['score_policy_cot']}/5: {one_line(a['feedback'])}"
        for a in items
    )


def variable(name: str, value: Value, placeholders: Mapping[str, str]) -> str:
    """One template variable as text, formatted by its name; `placeholders` maps PLACEHOLDERS keys to text."""
    if name == "cot":
        return cot(_strings(name, value))
    if name == "intents":
        return intents(_records(name, value))
    if name == "history":
        return history(_records(name, value), placeholders[PLACEHOLDERS[name]])
    if name == "attempts":
        return attempts(_records(name, value), placeholders[PLACEHOLDERS[name]])
    if not isinstance(value, str):
        raise TypeError(f"variable {name!r} must be text, got {type(value).__name__}")
    return value


def _strings(name: str, value: Value) -> list[str]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"variable {name!r} must be a list of strings")
    return [str(v) for v in value]


def _records(name: str, value: Value) -> list[Mapping[str, Any]]:
    if isinstance(value, str) or not all(isinstance(v, Mapping) for v in value):
        raise TypeError(f"variable {name!r} must be a list of records")
    return [v for v in value if isinstance(v, Mapping)]
