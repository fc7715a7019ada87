"""The model factory: the only place that constructs LLM clients.

Each role gets a ChatOpenAI client on an OpenAI-compatible endpoint. Structured calls go through tool
calling (supported by vLLM, Ollama, llama.cpp and OpenAI alike): the tool is the reply schema with the
descriptions of the prompt set's tools.toml, the call is forced, the arguments are validated by pydantic and
the call is retried with the reason (the fragments' retry instruction) when the model returns something
invalid. Transient HTTP errors (429, 5xx,
connection errors, timeouts) are retried with backoff by the OpenAI client itself (max_retries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import openai
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from aidsafe.config import Endpoint, Settings
from aidsafe.errors import StructuredOutputError
from aidsafe.prompts import PromptSet
from aidsafe.usage import NO_USAGE, Usage, total

T = TypeVar("T", bound=BaseModel)
# A row-specific validation beyond the schema (e.g. thought numbers in range); raises ValueError.
Check = Callable[[T], None]
Messages = list[tuple[str, str]]
HttpClient = openai.DefaultAsyncHttpxClient  # built inside the task that uses it (one per event loop)
# One request's outcome: the validated reply (or None), the reason it is invalid, the usage.
Attempt = tuple[T | None, str, Usage]


class StructuredCaller(Protocol):
    """What graph nodes need from a model: one validated structured call."""

    role: str
    model_name: str

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]: ...

    async def text(self, messages: Messages) -> tuple[str, Usage]:
        """A plain reply (no tool), as a deployed model answers a user: the evaluated targets."""
        ...


def _usage_of(message: Any) -> Usage:
    meta: dict[str, Any] = dict(getattr(message, "usage_metadata", None) or {})
    return Usage(
        calls=1, input_tokens=meta.get("input_tokens", 0), output_tokens=meta.get("output_tokens", 0)
    )


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())[:500]


def _parse(schema: type[T], message: AIMessage) -> tuple[T | None, str | None]:
    """The reply's tool-call arguments validated against the schema, or the validation error."""
    calls = [c for c in message.tool_calls if c["name"] == schema.__name__]
    if not calls:
        return None, None
    try:
        return schema.model_validate(calls[0]["args"]), None
    except ValidationError as exc:
        return None, _validation_reason(exc)


def _why_invalid(message: AIMessage, max_tokens: int, parsing_error: str | None) -> str:
    used = message.usage_metadata["output_tokens"] if message.usage_metadata else 0
    # some servers (llama.cpp) report finish_reason "tool_calls" for a cut-off tool call
    if message.response_metadata.get("finish_reason") == "length" or used >= max_tokens:
        return f"the reply was cut off at max_tokens ({max_tokens})"
    if message.invalid_tool_calls:
        return "invalid tool call: " + str(message.invalid_tool_calls[0].get("error") or "").strip()[:300]
    if parsing_error is not None:
        return parsing_error
    return "the reply did not call the tool"


class ChatRole:
    """A role's model: structured calls with validation and bounded retries.

    The tool (with its descriptions) and the retry instruction come from the run's prompt set.
    """

    def __init__(
        self, role: str, llm: ChatOpenAI, structured_retries: int, max_tokens: int, prompts: PromptSet
    ) -> None:
        self.role = role
        self.max_tokens = max_tokens
        self.model_name = llm.model_name
        self._llm = llm
        self._retries = structured_retries
        self._prompts = prompts
        self._runnables: dict[type[BaseModel], Runnable[Any, Any]] = {}

    def _bound(self, schema: type[BaseModel]) -> Runnable[Any, Any]:
        """The model with the schema's tool, forced (as with_structured_output's function_calling)."""
        if schema not in self._runnables:
            self._runnables[schema] = self._llm.bind_tools(
                [self._prompts.tool(schema)], tool_choice=schema.__name__, parallel_tool_calls=False
            )
        return self._runnables[schema]

    async def _attempt(self, schema: type[T], conversation: Messages, check: Check[T] | None) -> Attempt[T]:
        """One request: the validated reply, or None and the reason it is invalid."""
        message = await self._bound(schema).ainvoke(conversation)
        if not isinstance(message, AIMessage):
            raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
        parsed, parsing_error = _parse(schema, message)
        if parsed is None:
            return None, _why_invalid(message, self.max_tokens, parsing_error), _usage_of(message)
        try:
            if check is not None:
                check(parsed)
        except ValueError as exc:
            return None, str(exc), _usage_of(message)
        return parsed, "", _usage_of(message)

    async def text(self, messages: Messages) -> tuple[str, Usage]:
        message = await self._llm.ainvoke(messages)
        content = message.content if isinstance(message.content, str) else str(message.content)
        return content, _usage_of(message)

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]:
        usage = NO_USAGE
        conversation: Messages = list(messages)
        reason = ""
        for _attempt in range(self._retries + 1):
            parsed, reason, used = await self._attempt(schema, conversation, check)
            usage = total(usage, used)
            if parsed is not None:
                return parsed, usage
            conversation = [*messages, ("human", self._prompts.retry(reason, schema.__name__))]
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
    settings: Settings, http_client: HttpClient, prompts: PromptSet, roles: list[str] | None = None
) -> dict[str, StructuredCaller]:
    """One structured caller per role (all roles by default), sharing the task's async HTTP client; the
    prompt set gives the tools and the retry instruction."""
    chosen = settings.roles if roles is None else {name: settings.roles[name] for name in roles}
    return {role: _caller(role, endpoint, http_client, prompts) for role, endpoint in chosen.items()}


def _caller(role: str, endpoint: Endpoint, http_client: HttpClient, prompts: PromptSet) -> StructuredCaller:
    """A local transformers checkpoint (an eval target) in this process, else a client of the endpoint."""
    if endpoint.local_path is not None:
        from aidsafe.local_model import LocalRole  # torch and transformers: only when a checkpoint is used

        return LocalRole(role, endpoint)
    llm = build_chat_model(endpoint, http_client)
    return ChatRole(role, llm, endpoint.structured_retries, endpoint.max_tokens, prompts)
