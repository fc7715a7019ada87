"""Run-time context of the graph: the models per role, the prompts and the deliberation budget."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aidsafe.models import StructuredCaller
from aidsafe.prompts import PromptSet


@dataclass(frozen=True)
class Context:
    """Passed to every node by LangGraph; the same for every row of a run."""

    models: Mapping[str, StructuredCaller]
    prompts: PromptSet
    agent_roles: tuple[str, ...]
    max_rounds: int

    def __post_init__(self) -> None:
        if not self.agent_roles:
            raise ValueError("at least one deliberation agent is required")
        missing = {"intent", "drafter", *self.agent_roles} - set(self.models)
        if missing:
            raise ValueError(f"no model for role(s) {sorted(missing)}")
        if self.max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")

    @property
    def recursion_limit(self) -> int:
        """A safety net above the loop's own bound: intent + draft + max_rounds turns + slack."""
        return self.max_rounds + 5
