"""Structured row values as prompt text: the one place that formats CoTs, intents, histories and attempts.

Every text that comes from a row (the user's prompt and everything a model wrote: intents, thoughts,
responses, feedback, beliefs) goes through `escape`, which neutralises the prompt set's delimiting tags, so
no value can close its fence or open another. Every item of a list becomes exactly one line (line breaks
inside an item are folded to spaces), and thoughts are numbered structurally, each inside its own
<thought n="N"> element, so the text of one thought can never look like the next one or shift the numbering
of the thoughts after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from graphs.protocol import Value

__all__ = [
    "PLACEHOLDERS",
    "TAGS",
    "Escape",
    "Value",
    "attempts",
    "cot",
    "history",
    "intents",
    "one_line",
    "variable",
]
# The variables whose empty value is shown as a placeholder text (fragments.toml key per variable).
PLACEHOLDERS = {"history": "no_history", "attempts": "no_attempts"}
# The tags this module adds around items: neutralised in every data value like the prompt files' own tags.
TAGS = frozenset({"thought"})
Escape = Callable[[str], str]  # neutralises delimiting tags in one data text


def one_line(text: object) -> str:
    """An item's text on one line: any run of whitespace (line breaks included) becomes one space."""
    return " ".join(str(text).split())


def cot(thoughts: Sequence[str], escape: Escape) -> str:
    """One <thought n="N"> element per line, N the position in the list (1-based)."""
    return "\n".join(
        f'<thought n="{n}">{escape(one_line(t))}</thought>' for n, t in enumerate(thoughts, start=1)
    )


def _intent_labels(item: Mapping[str, Any], escape: Escape) -> str:
    """`explicit, benign`; rows written before intents had a source show only the kind."""
    labels = [item.get("source"), item["kind"]]
    return ", ".join(escape(one_line(label)) for label in labels if label)


def intents(items: Sequence[Mapping[str, Any]], escape: Escape) -> str:
    return "\n".join(f"- [{_intent_labels(i, escape)}] {escape(one_line(i['description']))}" for i in items)


def _reviewer(turn: Mapping[str, Any], escape: Escape) -> str:
    agent = escape(one_line(turn["agent"]))
    return f"{agent} ({escape(one_line(turn['focus']))})" if turn.get("focus") else agent


def history(turns: Sequence[Mapping[str, Any]], empty: str, escape: Escape) -> str:
    """The deliberation log so far, one turn per line; `empty` when no agent has reviewed yet."""
    if not turns:
        return empty
    return "\n".join(
        f"turn {int(t['turn'])} by {_reviewer(t, escape)}: {escape(one_line(t['verdict']))}: "
        f"{escape(one_line(t['feedback']))}"
        for t in turns
    )


def attempts(items: Sequence[Mapping[str, Any]], empty: str, escape: Escape) -> str:
    """The whisperer's earlier attempts with the grader's feedback, one per line; `empty` before the first."""
    if not items:
        return empty
    return "\n".join(
        f"attempt {int(a['attempt'])}: belief: {escape(one_line(a['belief']))} -> policy faithfulness "
        f"{int(a['score_policy_cot'])}/5: {escape(one_line(a['feedback']))}"
        for a in items
    )


def variable(name: str, value: Value, placeholders: Mapping[str, str], escape: Escape) -> str:
    """One template variable as text, formatted by its name, every data text in it escaped; `placeholders`
    maps PLACEHOLDERS keys to text (from the prompt files, not escaped)."""
    if name == "cot":
        return cot(_strings(name, value), escape)
    if name == "intents":  # empty: the stage's no_intents text if it has one (the grader's), else nothing
        return intents(_records(name, value), escape) or placeholders.get("no_intents", "")
    if name == "history":
        return history(_records(name, value), placeholders[PLACEHOLDERS[name]], escape)
    if name == "attempts":
        return attempts(_records(name, value), placeholders[PLACEHOLDERS[name]], escape)
    if not isinstance(value, str):
        raise TypeError(f"variable {name!r} must be text, got {type(value).__name__}")
    return escape(value)


def _strings(name: str, value: Value) -> list[str]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"variable {name!r} must be a list of strings")
    return [str(v) for v in value]


def _records(name: str, value: Value) -> list[Mapping[str, Any]]:
    if isinstance(value, str) or not all(isinstance(v, Mapping) for v in value):
        raise TypeError(f"variable {name!r} must be a list of records")
    return [v for v in value if isinstance(v, Mapping)]
