"""Stage `generate`: AIDSAFE stages 1-3 (intents, first draft, deliberation) through the LangGraph graph."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from aidsafe.config import Settings
from aidsafe.output import USAGE
from aidsafe.partitions import Partition, RowRef, read_partition
from aidsafe.runner import RowContext
from aidsafe.stages.common import now
from graphs.context import Context
from graphs.graph import graph
from graphs.state import NO_USAGE, Usage, total

TURN = pa.struct(
    [
        ("turn", pa.int32()),
        ("agent", pa.string()),
        ("model", pa.string()),
        ("verdict", pa.string()),
        ("feedback", pa.string()),
        ("cot_changed", pa.bool_()),
        ("response_changed", pa.bool_()),
    ]
)
MODELS = pa.struct([("intent", pa.string()), ("drafter", pa.string()), ("agents", pa.list_(pa.string()))])
COLUMNS = pa.schema(
    [
        ("intents", pa.list_(pa.struct([("description", pa.string()), ("kind", pa.string())]))),
        ("initial_cot", pa.list_(pa.string())),
        ("initial_response", pa.string()),
        ("deliberation_log", pa.list_(TURN)),
        ("cot", pa.list_(pa.string())),
        ("response", pa.string()),
        ("stop_reason", pa.string()),
        ("rounds", pa.int32()),
        ("models", MODELS),
        ("policy_set", pa.string()),
        ("usage", pa.struct([("intent", USAGE), ("draft", USAGE), ("deliberation", USAGE)])),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def generated_row(state: Mapping[str, Any], models: Mapping[str, Any], policy_set: str) -> dict[str, Any]:
    """The generated columns of one row from its final graph state."""
    usage = state.get("usage", {})
    return {
        "intents": state["intents"],
        "initial_cot": state["initial_cot"],
        "initial_response": state["initial_response"],
        "deliberation_log": state.get("deliberation_log", []),
        "cot": state["cot"],
        "response": state["response"],
        "stop_reason": state["stop_reason"],
        "rounds": state["rounds"],
        "models": models,
        "policy_set": policy_set,
        "usage": {stage: usage.get(stage, NO_USAGE) for stage in ("intent", "draft", "deliberation")},
        "created_at": now(),
    }


class GenerateStage:
    name = "generate"
    output_subdir = "generated"
    prompt_names = ("intent", "draft", "deliberation")
    columns = COLUMNS

    def roles(self, settings: Settings) -> list[str]:
        return ["intent", "drafter", *settings.agent_roles]

    def identity(self, settings: Settings) -> str:
        return settings.stage_identity(self.name, self.roles(settings))

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        return read_partition(path, taken_ids, max_chars)

    async def process(self, row: RowRef, ctx: RowContext) -> tuple[dict[str, Any], Usage]:
        agents = tuple(ctx.settings.agent_roles)
        context = Context(ctx.models, ctx.prompts, agents, ctx.settings.max_rounds)
        state = await graph.ainvoke(
            {"prompt": row.prompt}, context=context, config={"recursion_limit": context.recursion_limit}
        )
        models = {
            "intent": ctx.models["intent"].model_name,
            "drafter": ctx.models["drafter"].model_name,
            "agents": [ctx.models[a].model_name for a in agents],
        }
        columns = generated_row(state, models, ctx.policies.hash)
        return columns, total(*columns["usage"].values())
