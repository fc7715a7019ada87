"""One row's view of the models: the implementation of graphs.protocol.Caller used by every stage.

This is the one place that renders a prompt file with row data, calls a role, meters token usage per
prompt, and turns a role's failure into StageFailed (only model, backend and input errors: anything else
is a bug and propagates, failing the partition).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from aidsafe.errors import StageFailed, row_errors
from aidsafe.prompts import PromptSet
from aidsafe.usage import NO_USAGE, Usage, total
from graphs.protocol import Check, Value

if TYPE_CHECKING:
    from aidsafe.models import StructuredCaller

T = TypeVar("T", bound=BaseModel)


class RowCalls:
    """The models of a partition as seen by one row, with that row's token usage per prompt."""

    def __init__(self, models: Mapping[str, StructuredCaller], prompts: PromptSet) -> None:
        self._models = models
        self._prompts = prompts
        self.usage: dict[str, Usage] = {}

    @property
    def roles(self) -> Collection[str]:
        return self._models.keys()

    def model_name(self, role: str) -> str:
        return self._models[role].model_name

    async def ask(
        self,
        role: str,
        prompt: str,
        schema: type[T],
        data: Mapping[str, Value],
        check: Check[T] | None = None,
        follow_up: Sequence[str] = (),
        *,
        focus: str | None = None,
    ) -> T:
        """Render `prompt` with data, call `role`, validate; StageFailed(prompt) if the role cannot answer.

        follow_up: texts sent as further user messages after the rendered prompt (e.g. a re-ask).
        focus: a review focus (agents/*.toml) whose instructions end the system message."""
        rendered = self._prompts.messages(prompt, data, focus)
        messages = [*rendered, *(("human", text) for text in follow_up)]
        try:
            result, usage = await self._models[role].call(schema, messages, check)
        except row_errors() as exc:
            raise StageFailed(prompt, exc) from exc
        self.usage[prompt] = total(self.usage.get(prompt, NO_USAGE), usage)
        return result

    async def say(self, role: str, text: str, fork: str | None = None) -> str:
        """Send text as the one user message to `role` and return its plain reply (no tool, no prompt file:
        an evaluated model meets the prompt as a user wrote it); StageFailed(role) if it cannot answer.
        fork: the forking token of an SSFT checkpoint the reply starts from."""
        try:
            reply, usage = await self._models[role].text([("human", text)], fork)
        except row_errors() as exc:
            raise StageFailed(role, exc) from exc
        self.usage[role] = total(self.usage.get(role, NO_USAGE), usage)
        return reply

    def used(self, *prompts: str) -> Usage:
        """Token usage of some prompts (all of them by default)."""
        return total(*(u for p, u in self.usage.items() if not prompts or p in prompts))
