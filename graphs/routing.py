"""The conditional edge of the deliberation loop."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import State


class UnexpectedState(RuntimeError):
    """The loop reached a state the router does not know how to leave."""


def _check_complete(state: State, context: Context) -> None:
    """A `complete` stop needs a confirming last turn and, with deliberation_end `all`, every agent's
    review."""
    log = state.get("deliberation_log", [])
    if not log or log[-1]["verdict"] != "complete":
        raise UnexpectedState("deliberation marked complete without a confirming verdict in its last turn")
    if not context.may_end(log):
        raise UnexpectedState(
            f"deliberation marked complete after turn {len(log)}, but with deliberation_end "
            f"{context.deliberation_end!r} agent(s) {context.not_reviewed(log)} have not reviewed yet"
        )


def route_deliberation(state: State, runtime: Runtime[Context]) -> Literal["deliberate", "__end__"]:
    """Loop while the loop may not end yet and the budget lasts; end otherwise."""
    rounds = state.get("rounds", 0)
    stop = state.get("stop_reason")
    budget = runtime.context.max_rounds
    if rounds > budget:
        raise UnexpectedState(f"deliberation ran {rounds} rounds, over its budget of {budget}")
    if stop == "complete":
        _check_complete(state, runtime.context)
        return "__end__"  # langgraph.graph.END
    if stop == "budget_exhausted" and rounds == budget:
        return "__end__"
    if stop is None and rounds < budget:
        return "deliberate"
    raise UnexpectedState(
        f"unexpected deliberation state: stop_reason={stop!r}, rounds={rounds}, budget={budget}"
    )
