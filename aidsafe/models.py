"""The model factory: the only place that constructs LLM clients.

Each role gets a ChatOpenAI client on an OpenAI-compatible endpoint. Structured calls go through tool
calling (supported by vLLM, Ollama, llama.cpp and OpenAI alike): the tool is the reply schema with the
descriptions of the prompt set's tools.toml, the call is forced, the arguments are validated by pydantic and
the call is retried with the reason (the fragments' retry instruction) when the model returns something
invalid. Transient HTTP errors (429, 5xx, connection errors, timeouts) are retried with backoff by the
OpenAI client itself (max_retries).

ChatOpenAI builds each request (messages, the tool, the max_tokens field) and owns the openai client that
sends it, one per endpoint and process. Not used, as they cost more per call than all the rest of the client
(README, "Performance"): ChatOpenAI's Runnable layer (callback managers, a thread-pool hop per reply to build
an AIMessage), openai's transformation of the request body (the identity on plain JSON) and its typed reply
objects (aidsafe.replies reads the reply's JSON). Every request waits for a slot of its endpoint's in-flight
limit (aidsafe.limits).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from aidsafe.config import Endpoint, Settings
from aidsafe.errors import ConfigError, StructuredOutputError
from aidsafe.llm_io import Connections
from aidsafe.prompts import PromptSet
from aidsafe.replies import Reply
from aidsafe.usage import NO_USAGE, Usage, total

T = TypeVar("T", bound=BaseModel)
# A row-specific validation beyond the schema (e.g. thought numbers in range); raises ValueError.
Check = Callable[[T], None]
Messages = list[tuple[str, str]]
# One request's outcome: the validated reply (or None), the reason it is invalid, the usage.
Attempt = tuple[T | None, str, Usage]
# request fields of a ChatOpenAI payload that are options of the openai client's request, not body fields
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}
_REQUESTS = itertools.count()


class StructuredCaller(Protocol):
    """What graph nodes need from a model: one validated structured call."""

    role: str
    model_name: str

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]: ...

    async def text(self, messages: Messages, fork: str | None = None) -> tuple[str, Usage]:
        """A plain reply (no tool), as a deployed model answers a user: the evaluated targets. fork: a
        forking token the reply starts from (an SSFT checkpoint in process only)."""
        ...


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())[:500]


def _arguments(schema: type[BaseModel], reply: Reply) -> tuple[Any, str]:
    """The JSON arguments of the reply's call of the schema's tool, or why there are none."""
    arguments = reply.tool_arguments(schema.__name__)
    if arguments is None:
        return None, "the reply did not call the tool"
    try:
        # strict=False: raw newlines and tabs inside strings (small models write them) are kept, as
        # LangChain's own tool-call parser does
        return json.loads(arguments or "{}", strict=False), ""
    except json.JSONDecodeError as exc:
        return None, f"invalid tool call: {exc}"[:300]


def _cut_off(reply: Reply, max_tokens: int) -> str:
    """Why an invalid reply is invalid when it hit max_tokens (the likelier cause), else ''."""
    # some servers (llama.cpp) report finish_reason "tool_calls" for a cut-off tool call
    length = reply.finish_reason == "length" or reply.output_tokens >= max_tokens
    return f"the reply was cut off at max_tokens ({max_tokens})" if length else ""


def _parse(schema: type[T], reply: Reply, max_tokens: int) -> tuple[T | None, str]:
    """The reply's tool-call arguments validated against the schema, or the reason they are not valid."""
    arguments, problem = _arguments(schema, reply)
    if not problem:
        try:
            return schema.model_validate(arguments), ""
        except ValidationError as exc:
            problem = _validation_reason(exc)
    return None, _cut_off(reply, max_tokens) or problem


class ChatRole:
    """A role's model: structured calls with validation and bounded retries.

    The tool (with its descriptions) and the retry instruction come from the run's prompt set.
    """

    def __init__(self, role: str, llm: ChatOpenAI, endpoint: Endpoint, prompts: PromptSet) -> None:
        self.role = role
        self.max_tokens = endpoint.max_tokens
        self.model_name = llm.model_name
        self._llm = llm
        self._retries = endpoint.structured_retries
        self._prompts = prompts
        self._tools: dict[type[BaseModel], dict[str, Any]] = {}

    def _tool(self, schema: type[BaseModel]) -> dict[str, Any]:
        """The request fields forcing the schema's tool (as bind_tools with tool_choice builds them)."""
        if schema not in self._tools:
            bound: Any = self._llm.bind_tools(
                [self._prompts.tool(schema)], tool_choice=schema.__name__, parallel_tool_calls=False
            )
            self._tools[schema] = dict(bound.kwargs)
        return self._tools[schema]

    async def _complete(self, messages: Messages, **fields: Any) -> Reply:
        """One chat completion: ChatOpenAI builds the request, its openai client sends it (each HTTP
        attempt waits for a slot of the endpoint's limit: aidsafe.llm_io)."""
        payload = self._llm._get_request_payload(messages, **fields)
        options: Any = {name: payload.pop(key) for key, name in _OPTIONS.items() if key in payload}
        options["idempotency_key"] = f"aidsafe-{next(_REQUESTS)}"  # kept over retries; else a uuid4 per call
        extra = payload.pop("extra_body", None) or {}
        body = payload | extra
        # post, not create: create walks the whole body through openai's TypedDict transform, which is
        # the identity on a body of plain JSON like this one and cost 15% of the client's time per call;
        # cast_to=object: the reply's JSON as it came (aidsafe.replies)
        data = await self._llm.root_async_client.post(
            "/chat/completions", cast_to=object, body=body, options=options
        )
        return Reply(data)

    async def _attempt(self, schema: type[T], conversation: Messages, check: Check[T] | None) -> Attempt[T]:
        """One request: the validated reply, or None and the reason it is invalid."""
        reply = await self._complete(conversation, **self._tool(schema))
        parsed, reason = _parse(schema, reply, self.max_tokens)
        if parsed is not None and check is not None:
            try:
                check(parsed)
            except ValueError as exc:
                parsed, reason = None, str(exc)
        return parsed, reason, reply.usage()

    async def text(self, messages: Messages, fork: str | None = None) -> tuple[str, Usage]:
        if fork is not None:
            raise ConfigError(
                f"role {self.role}: forking tokens need an SSFT checkpoint in process (hf:PATH), not a server"
            )
        reply = await self._complete(messages)
        return reply.content, reply.usage()

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


def build_chat_model(endpoint: Endpoint, http_client: Any) -> ChatOpenAI:
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
    settings: Settings, connections: Connections, prompts: PromptSet, roles: list[str] | None = None
) -> dict[str, StructuredCaller]:
    """One structured caller per role (all roles by default), sharing the event loop's HTTP client and
    endpoint limits; the prompt set gives the tools and the retry instruction."""
    chosen = settings.roles if roles is None else {name: settings.roles[name] for name in roles}
    return {role: _caller(role, endpoint, connections, prompts) for role, endpoint in chosen.items()}


def _caller(role: str, endpoint: Endpoint, connections: Connections, prompts: PromptSet) -> StructuredCaller:
    """A local transformers checkpoint (an eval target) in this process, else a client of the endpoint."""
    if endpoint.local_path is not None:
        from aidsafe.local_model import LocalRole  # torch and transformers: only when a checkpoint is used

        return LocalRole(role, endpoint)
    return chat_role(role, endpoint, connections, prompts)


def chat_role(role: str, endpoint: Endpoint, connections: Connections, prompts: PromptSet) -> ChatRole:
    """A client of the endpoint on the event loop's HTTP client, within its base URL's in-flight limit."""
    llm = connections.reuse(("chat", endpoint), lambda: build_chat_model(endpoint, connections.http))
    assert endpoint.base_url is not None  # build_chat_model checked it
    connections.limit(endpoint.base_url, endpoint.max_in_flight)
    return ChatRole(role, llm, endpoint, prompts)
