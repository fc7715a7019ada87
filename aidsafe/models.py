"""The model factory: the only place that constructs LLM clients.

Each role gets a ChatOpenAI client on an OpenAI-compatible endpoint. Structured calls go through tool
calling (supported by vLLM, Ollama, llama.cpp and OpenAI alike), are validated by pydantic and retried
with the validation error when the model returns something invalid. Transient HTTP errors (429, 5xx,
connection errors, timeouts) are retried with backoff by the OpenAI client itself (max_retries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import openai
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from aidsafe.config import Endpoint, Settings
from aidsafe.errors import StructuredOutputError
from aidsafe.usage import NO_USAGE, Usage, total

T = TypeVar("T", bound=BaseModel)
# A row-specific validation beyond the schema (e.g. thought numbers in range); raises ValueError.
Check = Callable[[T], None]
Messages = list[tuple[str, str]]
HttpClient = openai.DefaultAsyncHttpxClient  # built inside the task that uses it (one per event loop)


class StructuredCaller(Protocol):
    """What graph nodes need from a model: one validated structured call."""

    role: str
    model_name: str

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]: ...


def _usage_of(message: Any) -> Usage:
    meta: dict[str, Any] = dict(getattr(message, "usage_metadata", None) or {})
    return Usage(
        calls=1, input_tokens=meta.get("input_tokens", 0), output_tokens=meta.get("output_tokens", 0)
    )


def _why_invalid(result: dict[str, Any], max_tokens: int) -> str:
    raw = result.get("raw")
    if isinstance(raw, AIMessage):
        used = raw.usage_metadata["output_tokens"] if raw.usage_metadata else 0
        # some servers (llama.cpp) report finish_reason "tool_calls" for a cut-off tool call
        if raw.response_metadata.get("finish_reason") == "length" or used >= max_tokens:
            return f"the reply was cut off at max_tokens ({max_tokens})"
        if raw.invalid_tool_calls:
            return "invalid tool call: " + str(raw.invalid_tool_calls[0].get("error") or "").strip()[:300]
    if result.get("parsing_error") is not None:
        return str(result["parsing_error"]).splitlines()[0][:500]
    return "the reply did not call the tool"


class ChatRole:
    """A role's model: structured calls with validation and bounded retries."""

    def __init__(self, role: str, llm: ChatOpenAI, structured_retries: int, max_tokens: int) -> None:
        self.role = role
        self.max_tokens = max_tokens
        self.model_name = llm.model_name
        self._llm = llm
        self._retries = structured_retries
        self._runnables: dict[type[BaseModel], Runnable[Any, Any]] = {}

    def _structured(self, schema: type[BaseModel]) -> Runnable[Any, Any]:
        if schema not in self._runnables:
            self._runnables[schema] = self._llm.with_structured_output(
                schema, method="function_calling", include_raw=True
            )
        return self._runnables[schema]

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]:
        usage = NO_USAGE
        conversation: Messages = list(messages)
        reason = ""
        for _attempt in range(self._retries + 1):
            result = await self._structured(schema).ainvoke(conversation)
            usage = total(usage, _usage_of(result.get("raw")))
            parsed = result.get("parsed")
            if isinstance(parsed, schema) and result.get("parsing_error") is None:
                try:
                    if check is not None:
                        check(parsed)
                    return parsed, usage
                except ValueError as exc:
                    reason = str(exc)
            else:
                reason = _why_invalid(result, self.max_tokens)
            conversation = [
                *messages,
                (
                    "human",
                    f"Your previous reply was invalid ({reason}). Call {schema.__name__} again, briefly.",
                ),
            ]
        raise StructuredOutputError(
            f"{self.role} ({self.model_name}) gave no valid {schema.__name__} "
            f"in {self._retries + 1} attempts: {reason}"
        )


def build_chat_model(endpoint: Endpoint, http_client: HttpClient) -> ChatOpenAI:
    """A ChatOpenAI client for one endpoint; max_tokens goes in the field the server honours."""
    if endpoint.base_url is None:
        raise ValueError("the embedded server must be running before clients are built")
    token_limit: dict[str, Any] = (
        {"max_tokens": endpoint.max_tokens}
        if endpoint.max_tokens_field == "max_completion_tokens"
        else {"extra_body": {"max_tokens": endpoint.max_tokens}}
    )
    return ChatOpenAI(
        model=endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        temperature=endpoint.temperature,
        timeout=endpoint.timeout,
        max_retries=endpoint.max_retries,
        http_async_client=http_client,
        **token_limit,
    )


def build_roles(
    settings: Settings, http_client: HttpClient, roles: list[str] | None = None
) -> dict[str, StructuredCaller]:
    """One structured caller per role (all roles by default), sharing the task's async HTTP client."""
    chosen = settings.roles if roles is None else {name: settings.roles[name] for name in roles}
    return {
        role: ChatRole(
            role, build_chat_model(endpoint, http_client), endpoint.structured_retries, endpoint.max_tokens
        )
        for role, endpoint in chosen.items()
    }
