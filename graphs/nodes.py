"""Graph nodes: intent decomposition, first draft, and one deliberation turn.

Nodes pass row values as they are (lists, strings); the Caller renders them into the prompt files as data.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.protocol import Value
from graphs.schemas import Draft, IntentList, Verdict
from graphs.state import State, StopReason, Turn


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
    """The log entry of one turn, with the CoT and response as they stand after it (how the CoT grew)."""
    cot = state["cot"] if verdict.complete or verdict.thoughts is None else verdict.thoughts
    response = state["response"] if verdict.complete or verdict.response is None else verdict.response
    return Turn(
        turn=rounds,
        agent=agent,
        focus=context.focus.get(agent),
        model=context.caller.model_name(agent),
        verdict="complete" if verdict.complete else "revise",
        feedback=verdict.feedback,
        cot_changed=cot != state["cot"],
        response_changed=response != state["response"],
        cot=cot,
        response=response,
    )


def _stop_reason(state: State, context: Context, turn: Turn) -> StopReason | None:
    """complete when the turn confirms and the loop may end (deliberation_end), budget_exhausted when the
    budget is spent, else None (another turn)."""
    if turn["verdict"] == "complete" and context.may_end([*state.get("deliberation_log", []), turn]):
        return "complete"
    if turn["turn"] >= context.max_rounds:
        return "budget_exhausted"
    return None


async def deliberate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 3, one turn: the next agent, with its review focus, confirms completeness or expands and
    corrects CoT and response."""
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
    focus = context.focus.get(agent)
    verdict = await context.caller.ask(agent, "deliberation", Verdict, data, focus=focus)
    turn = _turn(state, context, agent, verdict, state.get("rounds", 0) + 1)
    return {
        "rounds": turn["turn"],
        "deliberation_log": [turn],
        "cot": turn["cot"],
        "response": turn["response"],
        "stop_reason": _stop_reason(state, context, turn),
    }
