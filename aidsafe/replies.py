"""A chat completion as the server sent it (JSON), read without building openai's typed objects.

openai's client builds a ChatCompletion model for every reply; aidsafe needs four of its fields, and the
construction cost about 7% of the client's time per call. Every accessor is defensive: a reply missing a
field (or not an object at all) reads as empty, and the caller says what was missing.
"""

from __future__ import annotations

from typing import Any

from aidsafe.usage import Usage


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Reply:
    """The fields of one chat completion that aidsafe reads."""

    def __init__(self, data: object) -> None:
        reply = _object(data)
        choices = reply.get("choices")
        self._choice = _object(choices[0]) if isinstance(choices, list) and choices else {}
        self._message = _object(self._choice.get("message"))
        self._usage = _object(reply.get("usage"))

    @property
    def finish_reason(self) -> str | None:
        reason = self._choice.get("finish_reason")
        return reason if isinstance(reason, str) else None

    @property
    def content(self) -> str:
        content = self._message.get("content")
        return content if isinstance(content, str) else ""

    @property
    def output_tokens(self) -> int:
        return _count(self._usage.get("completion_tokens"))

    def usage(self) -> Usage:
        return Usage(
            calls=1, input_tokens=_count(self._usage.get("prompt_tokens")), output_tokens=self.output_tokens
        )

    def tool_arguments(self, name: str) -> str | None:
        """The JSON text of the arguments of the reply's first call of the function `name`, if any."""
        calls = self._message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = _object(_object(call).get("function"))
            if function.get("name") == name:
                arguments = function.get("arguments")
                return arguments if isinstance(arguments, str) else "{}"
        return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0
