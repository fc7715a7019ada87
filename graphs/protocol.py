"""What a graph node needs from the models: defined here, implemented in aidsafe (aidsafe.calls.RowCalls)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)
# A row value given to a prompt: text, a list of thoughts, or a list of records (intents, turns, attempts).
Value = str | Sequence[str] | Sequence[Mapping[str, Any]]
# A row-specific validation beyond the schema (e.g. thought numbers in range); raises ValueError.
Check = Callable[[T], None]


class Caller(Protocol):
    """Asks a role's model for one validated structured reply.

    The implementation renders the named prompt file with `data` (row values, fenced as data), adds the
    instructions of the review focus named `focus` (a prompt file) when one is given, calls the role's
    model, validates the reply against `schema` (and `check`), retries invalid replies, meters token usage,
    and raises aidsafe.errors.StageFailed naming the prompt when the role cannot answer.
    """

    @property
    def roles(self) -> Collection[str]: ...

    def model_name(self, role: str) -> str: ...

    async def ask(
        self,
        role: str,
        prompt: str,
        schema: type[T],
        data: Mapping[str, Value],
        check: Check[T] | None = None,
        *,
        focus: str | None = None,
    ) -> T: ...
