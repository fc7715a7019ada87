"""Run-time context of the graph: the models (through the Caller protocol) and the deliberation budget."""

from __future__ import annotations

from dataclasses import dataclass

from graphs.protocol import Caller


@dataclass(frozen=True)
class Context:
    """Passed to every node by LangGraph; one per row."""

    caller: Caller
    agent_roles: tuple[str, ...]
    max_rounds: int

    def __post_init__(self) -> None:
        if not self.agent_roles:
            raise ValueError("at least one deliberation agent is required")
        missing = {"intent", "drafter", *self.agent_roles} - set(self.caller.roles)
        if missing:
            raise ValueError(f"no model for role(s) {sorted(missing)}")
        if self.max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")

    @property
    def recursion_limit(self) -> int:
        """A safety net above the loop's own bound: intent + draft + max_rounds turns + slack."""
        return self.max_rounds + 5
