"""Graph state: the narrow input (a prompt) and the full state that nodes read and update."""

from __future__ import annotations

import operator
from typing import Annotated, Literal, TypedDict

StopReason = Literal["complete", "budget_exhausted"]
STAGES = ("intent", "draft", "deliberation")


class Usage(TypedDict):
    """Token usage of one stage."""

    calls: int
    input_tokens: int
    output_tokens: int


class Turn(TypedDict):
    """One entry of the deliberation log."""

    turn: int
    agent: str
    model: str
    verdict: Literal["revise", "complete"]
    feedback: str
    cot_changed: bool
    response_changed: bool


NO_USAGE = Usage(calls=0, input_tokens=0, output_tokens=0)


def total(*usages: Usage) -> Usage:
    """The sum of some token usages."""
    return Usage(
        calls=sum(u["calls"] for u in usages),
        input_tokens=sum(u["input_tokens"] for u in usages),
        output_tokens=sum(u["output_tokens"] for u in usages),
    )


def merge_usage(left: dict[str, Usage], right: dict[str, Usage]) -> dict[str, Usage]:
    """Reducer: add token usage stage by stage."""
    merged = dict(left)
    for stage, usage in right.items():
        merged[stage] = total(merged.get(stage, NO_USAGE), usage)
    return merged


class InputState(TypedDict):
    """What the graph is invoked with."""

    prompt: str


class State(InputState, total=False):
    """The full state of one row's deliberation."""

    intents: list[dict[str, str]]
    initial_cot: list[str]
    initial_response: str
    cot: list[str]
    response: str
    deliberation_log: Annotated[list[Turn], operator.add]
    rounds: int
    stop_reason: StopReason | None
    usage: Annotated[dict[str, Usage], merge_usage]
