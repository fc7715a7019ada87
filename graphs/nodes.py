"""Graph nodes: intent decomposition, first draft, and one deliberation turn.

Nodes pass row values as they are (lists, strings); the Caller renders them into the prompt files as data.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.protocol import Value
from graphs.schemas import Draft, IntentList, Verdict
from graphs.state import State, Turn


async def decompose_intents(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 1: list the explicit and implicit intents of the prompt."""
    caller = runtime.context.caller
    result = await caller.ask("intent", "intent", IntentList, {"prompt": state["prompt"]})
    return {"intents": [i.model_dump() for i in result.intents]}


async def draft(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 2: the initial CoT and response from prompt, policies and intents."""
    data: dict[str, Value] = {"prompt": state["prompt"], "intents": state["intents"]}
    result = await runtime.context.caller.ask("drafter", "draft", Draft, data)
    return {
        "initial_cot": result.thoughts,
        "initial_response": result.response,
        "cot": result.thoughts,
        "response": result.response,
        "rounds": 0,
        "stop_reason": None,
    }


def _next_agent(state: State, context: Context) -> str:
    return context.agent_roles[state.get("rounds", 0) % len(context.agent_roles)]


def _turn(state: State, context: Context, agent: str, verdict: Verdict, rounds: int) -> Turn:
    return Turn(
        turn=rounds,
        agent=agent,
        model=context.caller.model_name(agent),
        verdict="complete" if verdict.complete else "revise",
        feedback=verdict.feedback,
        cot_changed=not verdict.complete and verdict.thoughts != state["cot"],
        response_changed=not verdict.complete and verdict.response != state["response"],
    )


async def deliberate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 3, one turn: the next agent confirms completeness or revises CoT and response."""
    context = runtime.context
    agent = _next_agent(state, context)
    data: dict[str, Value] = {
        "agent": agent,
        "prompt": state["prompt"],
        "intents": state["intents"],
        "history": state.get("deliberation_log", []),
        "cot": state["cot"],
        "response": state["response"],
    }
    verdict = await context.caller.ask(agent, "deliberation", Verdict, data)
    rounds = state.get("rounds", 0) + 1
    update: dict[str, Any] = {
        "rounds": rounds,
        "deliberation_log": [_turn(state, context, agent, verdict, rounds)],
    }
    if not verdict.complete:
        update |= {"cot": verdict.thoughts, "response": verdict.response}
    if verdict.complete:
        update["stop_reason"] = "complete"
    elif rounds >= context.max_rounds:
        update["stop_reason"] = "budget_exhausted"
    return update
