"""Graph nodes: intent decomposition, first draft, and one deliberation turn."""

from __future__ import annotations

from typing import Any, TypeVar

from langgraph.runtime import Runtime
from pydantic import BaseModel

from aidsafe.errors import StageFailed
from aidsafe.render import Value
from graphs.context import Context
from graphs.schemas import Draft, IntentList, Verdict
from graphs.state import State, Turn, Usage

T = TypeVar("T", bound=BaseModel)


async def _call(
    runtime: Runtime[Context], role: str, stage: str, schema: type[T], data: dict[str, Value]
) -> tuple[T, dict[str, Usage]]:
    model = runtime.context.models[role]
    messages = runtime.context.prompts[stage].messages(**data)
    try:
        result, usage = await model.call(schema, messages)
    except Exception as exc:
        raise StageFailed(stage, exc) from exc
    return result, {stage: usage}


async def decompose_intents(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 1: list the explicit and implicit intents of the prompt."""
    result, usage = await _call(runtime, "intent", "intent", IntentList, {"prompt": state["prompt"]})
    return {"intents": [i.model_dump() for i in result.intents], "usage": usage}


async def draft(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stage 2: the initial CoT and response from prompt, policies and intents."""
    data: dict[str, Value] = {"prompt": state["prompt"], "intents": state["intents"]}
    result, usage = await _call(runtime, "drafter", "draft", Draft, data)
    return {
        "initial_cot": result.thoughts,
        "initial_response": result.response,
        "cot": result.thoughts,
        "response": result.response,
        "rounds": 0,
        "stop_reason": None,
        "usage": usage,
    }


def _next_agent(state: State, context: Context) -> str:
    return context.agent_roles[state.get("rounds", 0) % len(context.agent_roles)]


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
    verdict, usage = await _call(runtime, agent, "deliberation", Verdict, data)
    rounds = state.get("rounds", 0) + 1
    update: dict[str, Any] = {"rounds": rounds, "usage": usage}
    cot_changed = response_changed = False
    if not verdict.complete:
        assert verdict.thoughts is not None and verdict.response is not None  # guaranteed by Verdict
        cot_changed, response_changed = (
            verdict.thoughts != state["cot"],
            verdict.response != state["response"],
        )
        update |= {"cot": verdict.thoughts, "response": verdict.response}
    update["deliberation_log"] = [
        Turn(
            turn=rounds,
            agent=agent,
            model=context.models[agent].model_name,
            verdict="complete" if verdict.complete else "revise",
            feedback=verdict.feedback,
            cot_changed=cot_changed,
            response_changed=response_changed,
        )
    ]
    if verdict.complete:
        update["stop_reason"] = "complete"
    elif rounds >= context.max_rounds:
        update["stop_reason"] = "budget_exhausted"
    return update
