"""The conditional edge of the deliberation loop."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import State


class UnexpectedState(RuntimeError):
    """The loop reached a state the router does not know how to leave."""


def route_deliberation(state: State, runtime: Runtime[Context]) -> Literal["deliberate", "__end__"]:
    """Loop while no agent confirmed completeness and the budget lasts; end otherwise."""
    rounds = state.get("rounds", 0)
    stop = state.get("stop_reason")
    budget = runtime.context.max_rounds
    if rounds > budget:
        raise UnexpectedState(f"deliberation ran {rounds} rounds, over its budget of {budget}")
    if stop == "complete" or (stop == "budget_exhausted" and rounds == budget):
        return "__end__"  # langgraph.graph.END
    if stop is None and rounds < budget:
        return "deliberate"
    raise UnexpectedState(
        f"unexpected deliberation state: stop_reason={stop!r}, rounds={rounds}, budget={budget}"
    )
