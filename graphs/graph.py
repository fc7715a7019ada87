"""Wiring only: intent decomposition -> first draft -> deliberation loop -> end."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs.context import Context
from graphs.nodes import decompose_intents, deliberate, draft
from graphs.routing import route_deliberation
from graphs.state import InputState, State


def build_graph() -> CompiledStateGraph[State, Context, InputState, State]:
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    builder.add_node("decompose_intents", decompose_intents)
    builder.add_node("draft", draft)
    builder.add_node("deliberate", deliberate)
    builder.add_edge(START, "decompose_intents")
    builder.add_edge("decompose_intents", "draft")
    builder.add_edge("draft", "deliberate")
    builder.add_conditional_edges("deliberate", route_deliberation, ["deliberate", END])
    return builder.compile(name="aidsafe-deliberation")


graph = build_graph()
