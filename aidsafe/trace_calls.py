"""A row's calls as one trace configuration sees them: the graph asks for `drafter` or `agent1`, and the
configuration's own role (`drafter@NAME`) answers. The intents are the prompt's, not the configuration's:
the first configuration to ask decomposes the prompt, the others wait for that answer and reuse it."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TypeVar

from pydantic import BaseModel

from aidsafe.calls import RowCalls
from graphs.protocol import Check, Value

T = TypeVar("T", bound=BaseModel)
SHARED = "intent"  # the role whose answer every configuration of a row shares


class SharedAnswers:
    """One row's shared answers, by role: asked once, however many configurations need them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.answers: dict[str, BaseModel] = {}


class ConfiguredCalls:
    """The Caller of one configuration: its roles renamed, the intent answer shared by the row."""

    def __init__(self, calls: RowCalls, renamed: Mapping[str, str], shared: SharedAnswers) -> None:
        self._calls = calls
        self._renamed = renamed
        self._shared = shared

    @property
    def roles(self) -> Collection[str]:
        return {*self._calls.roles, *self._renamed}

    def model_name(self, role: str) -> str:
        return self._calls.model_name(self._renamed.get(role, role))

    async def ask(
        self,
        role: str,
        prompt: str,
        schema: type[T],
        data: Mapping[str, Value],
        check: Check[T] | None = None,
        *,
        focus: str | None = None,
    ) -> T:
        if role != SHARED:
            return await self._calls.ask(
                self._renamed.get(role, role), prompt, schema, data, check, focus=focus
            )
        shared = self._shared
        async with shared.lock:  # the first configuration asks; the others wait and get its answer
            if role not in shared.answers:
                asked: T = await self._calls.ask(role, prompt, schema, data, check, focus=focus)
                shared.answers[role] = asked
            answer = shared.answers[role]
        assert isinstance(answer, schema)
        return answer
