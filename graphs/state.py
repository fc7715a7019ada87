"""Graph state: the narrow input (a prompt) and the full state that nodes read and update."""

from __future__ import annotations

import operator
from typing import Annotated, Literal, TypedDict

StopReason = Literal["complete", "budget_exhausted"]
# When a confirming verdict may end the loop: at once (`any`), or once every agent has reviewed (`all`).
DeliberationEnd = Literal["any", "all"]


class Turn(TypedDict):
    """One entry of the deliberation log, with the CoT and response as they stand after the turn."""

    turn: int
    agent: str
    focus: str | None
    model: str
    verdict: Literal["revise", "complete"]
    feedback: str
    cot_changed: bool
    response_changed: bool
    cot: list[str]
    response: str


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
