"""Stage `traces`: K different traces per prompt, each deliberated, refined and graded, then the kept set.

Per row, each configuration of the recipe (aidsafe.trace_recipe) runs the deliberation graph with its own
drafter and agents (their focus, temperature, model, budget; the intents are shared by the row), then the
refiner and the grader, as the run's stages do for one trace. A trace is kept when it meets the recipe's
minimum scores and is not a near-duplicate of a better kept trace (aidsafe.trace_dedup: the passing traces in
order of their total score, so of two copies the better one stays). Every trace is in the row, with why it was
not kept. A configuration that fails on a model's answer leaves its line in the failures table (stage
`NAME/<prompt>`), the row keeps the rest; a transient failure fails the row, so that a retry redoes it; a row
with no trace at all fails. Standalone: `aidsafe traces`, not part of `run`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa

from aidsafe.config import Settings
from aidsafe.errors import ModelError, StageFailed, is_transient
from aidsafe.partitions import RowRef
from aidsafe.schemas import METRICS
from aidsafe.stage import INPUT, RowContext, RowStage
from aidsafe.stages.common import now
from aidsafe.stages.generate import INTENT, TURN
from aidsafe.stages.grade import grade
from aidsafe.stages.refine import REMOVED, refine
from aidsafe.trace_calls import ConfiguredCalls, SharedAnswers
from aidsafe.trace_recipe import (
    TraceConfiguration,
    agent_focus,
    configurations,
    configured_roles,
    load_recipe,
)
from aidsafe.trace_selection import Selection, select
from aidsafe.usage import USAGE
from graphs.context import Context

NAME = "traces"
SCORES = pa.struct([(m, pa.int8()) for m in METRICS])
TRACE = pa.struct(
    [
        ("configuration", pa.string()),
        ("kept", pa.bool_()),
        ("dropped", pa.string()),  # why not kept (null: kept)
        ("cot", pa.list_(pa.string())),  # refined
        ("response", pa.string()),  # refined
        ("scores", SCORES),
        ("refused", pa.bool_()),
        ("stop_reason", pa.string()),
        ("rounds", pa.int32()),
        ("deliberation_log", pa.list_(TURN)),
        ("refinement_removed", pa.list_(REMOVED)),
        ("model_drafter", pa.string()),
        ("model_agents", pa.list_(pa.string())),
    ]
)
COLUMNS = pa.schema(
    [
        ("intents", pa.list_(INTENT)),
        ("traces", pa.list_(TRACE)),
        ("traces_made", pa.int32()),
        ("traces_passed", pa.int32()),  # met the minimum scores
        ("traces_kept", pa.int32()),  # of those, not near-duplicates
        ("traces_failed", pa.list_(pa.string())),  # configurations that failed (why: the failures table)
        ("traces_diversity", pa.float64()),  # mean 1 - Jaccard over the kept pairs (null: fewer than two)
        ("traces_min_score", SCORES),  # how they were selected (a metric without a minimum: null)
        ("traces_similarity", pa.float64()),
        ("traces_ngram", pa.int32()),
        ("model_refiner", pa.string()),
        ("model_grader", pa.string()),
        ("usage_traces", USAGE),
        ("traced_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _context(ctx: RowContext, configuration: TraceConfiguration, shared: SharedAnswers) -> Context:
    settings = ctx.settings
    calls = ConfiguredCalls(ctx.calls, configured_roles(settings, configuration), shared)
    focus = agent_focus(settings, configuration, set(ctx.prompts.focus))
    rounds = configuration.max_rounds or settings.max_rounds
    return Context(calls, tuple(settings.agent_roles), rounds, settings.deliberation_end, focus)


async def one_trace(
    row: RowRef, ctx: RowContext, configuration: TraceConfiguration, shared: SharedAnswers
) -> dict[str, Any]:
    """Deliberate, refine and grade under one configuration: the trace (before the selection) and intents."""
    from graphs.graph import graph  # LangGraph is imported when rows run, not when the CLI starts

    context = _context(ctx, configuration, shared)
    state = await graph.ainvoke(
        {"prompt": row.prompt}, context=context, config={"recursion_limit": context.recursion_limit}
    )
    thoughts, intents = [str(t) for t in state["cot"]], list(state["intents"])
    log = state.get("deliberation_log", [])
    refined = await refine(ctx, row.prompt, intents, log, thoughts, state["response"])
    graded = await grade(ctx, row.prompt, refined["refined_cot"], refined["refined_response"], intents)
    calls = context.caller
    return {
        "configuration": configuration.name, "cot": refined["refined_cot"],
        "response": refined["refined_response"], "scores": {m: graded[f"score_{m}"] for m in METRICS},
        "refused": graded["refused"], "stop_reason": state["stop_reason"], "rounds": state["rounds"],
        "deliberation_log": log, "refinement_removed": refined["refinement_removed"],
        "model_drafter": calls.model_name("drafter"),
        "model_agents": [calls.model_name(a) for a in context.agent_roles], "intents": intents,
    }  # fmt: skip


async def made_traces(row: RowRef, ctx: RowContext) -> tuple[list[dict[str, Any]], list[str]]:
    """The traces of every configuration that succeeded, and the names of those that failed on a model's
    answer (each noted in ctx.parts_failed); a transient failure, or no trace at all, fails the row."""
    shared = SharedAnswers()
    chosen = configurations(ctx.settings)
    results = await asyncio.gather(*(one_trace(row, ctx, c, shared) for c in chosen), return_exceptions=True)
    traces, failed = [], []
    for configuration, result in zip(chosen, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, StageFailed):
            raise result  # a bug, or an interrupt: not a failure of the configuration
        if isinstance(result, StageFailed):
            if is_transient(result):
                raise result
            ctx.parts_failed.append((configuration.name, result))
            failed.append(configuration.name)
        else:
            traces.append(result)
    if not traces:
        reasons = "; ".join(f"{name}: {exc}" for name, exc in ctx.parts_failed)
        ctx.parts_failed.clear()  # the row's own failure says it all
        raise StageFailed(NAME, ModelError(f"no configuration made a trace: {reasons}"))
    return traces, failed


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    traces, failed = await made_traces(row, ctx)
    intents = traces[0].pop("intents")
    for trace in traces[1:]:
        trace.pop("intents")
    recipe = load_recipe(ctx.settings.trace_configs)
    rule = Selection(recipe.min_score, recipe.similarity, recipe.ngram)
    selected, passed, diversity = select(traces, rule)
    return rule.columns() | {
        "intents": intents, "traces": selected, "traces_made": len(selected), "traces_passed": passed,
        "traces_kept": sum(t["kept"] for t in selected), "traces_failed": failed,
        "traces_diversity": diversity, "model_refiner": ctx.calls.model_name("refiner"),
        "model_grader": ctx.calls.model_name("grader"), "usage_traces": ctx.calls.used(),
        "traced_at": now(),
    }  # fmt: skip


def roles(settings: Settings) -> list[str]:
    """The shared intent role, the refiner and grader, and every configuration's drafter and agents (the
    settings must come from trace_settings, which adds them)."""
    configured = [r for c in configurations(settings) for r in configured_roles(settings, c).values()]
    return ["intent", "refiner", "grader", *configured]


TRACES = RowStage(
    name=NAME,
    help="K traces per prompt under K configurations, each deliberated, refined and graded; the kept set "
    "without near-duplicates (INPUT -> OUTPUT/traces)",
    reads=INPUT,
    output="traces",
    prompts=("intent", "draft", "deliberation", "refine", "grade"),
    roles=roles,
    columns=COLUMNS,
    process=process,
    in_run="never",
    setting_files=lambda settings: (settings.trace_configs,),  # the recipe
)
