"""Run-time context of the graph: the models (through the Caller protocol), the deliberation budget, when the
loop may end, and the review focus of each agent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from graphs.protocol import Caller
from graphs.state import DeliberationEnd


@dataclass(frozen=True)
class Context:
    """Passed to every node by LangGraph; one per row.

    focus maps an agent role to the name of its review focus (a prompt file); an agent without one reviews
    with the plain deliberation instructions.
    """

    caller: Caller
    agent_roles: tuple[str, ...]
    max_rounds: int
    deliberation_end: DeliberationEnd = "all"
    focus: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.agent_roles:
            raise ValueError("at least one deliberation agent is required")
        missing = {"intent", "drafter", *self.agent_roles} - set(self.caller.roles)
        if missing:
            raise ValueError(f"no model for role(s) {sorted(missing)}")
        if self.max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        if self.deliberation_end not in get_args(DeliberationEnd):
            raise ValueError(f"deliberation_end must be one of {get_args(DeliberationEnd)}")
        if strangers := set(self.focus) - set(self.agent_roles):
            raise ValueError(f"focus given for role(s) {sorted(strangers)}, not deliberation agents")

    @property
    def recursion_limit(self) -> int:
        """A safety net above the loop's own bound: intent + draft + max_rounds turns + slack."""
        return self.max_rounds + 5

    def not_reviewed(self, log: Sequence[Mapping[str, Any]]) -> list[str]:
        """The agents that have not taken a turn yet in this log."""
        reviewed = {turn["agent"] for turn in log}
        return [agent for agent in self.agent_roles if agent not in reviewed]

    def may_end(self, log: Sequence[Mapping[str, Any]]) -> bool:
        """Whether a confirming verdict may end the loop after this log: always with `any`; with `all`,
        only once every agent has reviewed at least once (an earlier confirmation is logged, it does not
        end the loop)."""
        return self.deliberation_end == "any" or not self.not_reviewed(log)
