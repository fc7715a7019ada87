"""Stage `generate`: AIDSAFE stages 1-3 (intents, first draft, deliberation) through the LangGraph graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from aidsafe.calls import RowCalls
from aidsafe.config import Settings
from aidsafe.errors import ConfigError
from aidsafe.partitions import RowRef
from aidsafe.prompts import FOCUS_DIR, PromptSet
from aidsafe.stage import INPUT, RowContext, RowStage
from aidsafe.stages.common import now
from aidsafe.usage import USAGE
from graphs.context import Context

TURN = pa.struct(
    [
        ("turn", pa.int32()),
        ("agent", pa.string()),
        ("focus", pa.string()),
        ("model", pa.string()),
        ("verdict", pa.string()),
        ("feedback", pa.string()),
        ("cot_changed", pa.bool_()),
        ("response_changed", pa.bool_()),
        ("cot", pa.list_(pa.string())),
        ("response", pa.string()),
    ]
)
INTENT = pa.struct([("description", pa.string()), ("source", pa.string()), ("kind", pa.string())])
MODELS = pa.struct([("intent", pa.string()), ("drafter", pa.string()), ("agents", pa.list_(pa.string()))])
PROMPTS = ("intent", "draft", "deliberation")
COLUMNS = pa.schema(
    [
        ("intents", pa.list_(INTENT)),
        ("initial_cot", pa.list_(pa.string())),
        ("initial_response", pa.string()),
        ("deliberation_log", pa.list_(TURN)),
        ("cot", pa.list_(pa.string())),
        ("response", pa.string()),
        ("stop_reason", pa.string()),
        ("rounds", pa.int32()),
        ("models", MODELS),
        ("policy_set", pa.string()),
        ("usage", pa.struct([(p, USAGE) for p in PROMPTS])),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def generated_row(state: Mapping[str, Any], ctx: RowContext, agents: tuple[str, ...]) -> dict[str, Any]:
    """The generated columns of one row from its final graph state."""
    names = ctx.calls.model_name
    return {
        "intents": state["intents"],
        "initial_cot": state["initial_cot"],
        "initial_response": state["initial_response"],
        "deliberation_log": state.get("deliberation_log", []),
        "cot": state["cot"],
        "response": state["response"],
        "stop_reason": state["stop_reason"],
        "rounds": state["rounds"],
        "models": {
            "intent": names("intent"),
            "drafter": names("drafter"),
            "agents": [names(a) for a in agents],
        },
        "policy_set": ctx.policies.hash,
        "usage": {p: ctx.calls.used(p) for p in PROMPTS},
        "created_at": now(),
    }


def agent_focus(settings: Settings, prompts: PromptSet) -> dict[str, str]:
    """The review focus of each agent: its role's `focus` setting, else agentN takes the Nth focus file
    (file-name order, from the first again when there are more agents than files)."""
    ids = list(prompts.focus)
    agents = settings.agent_roles
    chosen = {agent: settings.roles[agent].focus or ids[n % len(ids)] for n, agent in enumerate(agents)}
    for agent, focus in chosen.items():
        if focus not in prompts.focus:
            raise ConfigError(
                f"role {agent}: focus {focus!r} is not the id of a file in {prompts.directory}/{FOCUS_DIR} "
                f"(ids: {', '.join(ids)})"
            )
    return chosen


def deliberation_context(calls: RowCalls, settings: Settings, prompts: PromptSet) -> Context:
    """The graph's context for one row: its calls, the agents with their focus, budget and end rule."""
    agents = tuple(settings.agent_roles)
    focus = agent_focus(settings, prompts)
    return Context(calls, agents, settings.max_rounds, settings.deliberation_end, focus)


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    from graphs.graph import graph  # LangGraph is imported when rows run, not when the CLI starts

    agents = tuple(ctx.settings.agent_roles)
    context = deliberation_context(ctx.calls, ctx.settings, ctx.prompts)
    state = await graph.ainvoke(
        {"prompt": row.prompt}, context=context, config={"recursion_limit": context.recursion_limit}
    )
    return generated_row(state, ctx, agents)


def roles(settings: Settings) -> list[str]:
    return ["intent", "drafter", *settings.agent_roles]


GENERATE = RowStage(
    name="generate",
    help="intents, first draft and multi-agent deliberation for every prompt (INPUT -> OUTPUT/generated)",
    reads=INPUT,
    output="generated",
    prompts=PROMPTS,
    roles=roles,
    columns=COLUMNS,
    process=process,
)
