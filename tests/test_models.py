"""The model factory and structured calls, over real HTTP against the test server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from pydantic import SecretStr

from aidsafe.config import Endpoint
from aidsafe.errors import StructuredOutputError
from aidsafe.models import ChatRole, build_chat_model
from aidsafe.usage import Usage
from graphs.schemas import IntentList, Verdict
from tests.openai_server import FakeOpenAI, Reply, Request

MESSAGES = [("system", "You list intents."), ("human", "<user_prompt>\nhi\n</user_prompt>")]
GOOD = {"intents": [{"description": "Say hello.", "kind": "benign"}]}


def endpoint(server: FakeOpenAI, **extra: object) -> Endpoint:
    values: dict[str, object] = {
        "base_url": server.base_url,
        "model": "m",
        "api_key": SecretStr("sk-test-secret"),
    }
    return Endpoint(**(values | extra))


def sequence(*replies: Reply) -> Callable[[Request], Reply]:
    queue = list(replies)
    return lambda request: queue.pop(0)


async def call(server: FakeOpenAI, schema: type, retries: int = 2, **extra: object) -> tuple[Any, Usage]:
    async with openai.DefaultAsyncHttpxClient() as client:
        ep = endpoint(server, **extra)
        role = ChatRole("intent", build_chat_model(ep, client), retries, ep.max_tokens)
        return await role.call(schema, MESSAGES)


async def test_structured_call_uses_a_forced_tool_and_counts_tokens(
    fake_openai: Callable[..., FakeOpenAI],
) -> None:
    server = fake_openai(sequence(Reply(GOOD, prompt_tokens=321, completion_tokens=12)))
    result, usage = await call(server, IntentList)
    assert isinstance(result, IntentList) and result.intents[0].description == "Say hello."
    assert usage == {"calls": 1, "input_tokens": 321, "output_tokens": 12}
    body = server.requests[0].body
    assert body["tools"][0]["function"]["name"] == "IntentList"
    assert body["tool_choice"]["function"]["name"] == "IntentList"
    assert "description" in body["tools"][0]["function"]["parameters"]["properties"]["intents"]
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-secret"


async def test_invalid_output_is_retried_with_the_error(fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(sequence(Reply("{not json"), Reply({"intents": []}), Reply(GOOD)))
    result, usage = await call(server, IntentList, retries=2)
    assert isinstance(result, IntentList) and usage["calls"] == 3
    assert "invalid" in server.requests[1].user and "IntentList" in server.requests[1].user
    # a retry is the original conversation plus one correction: the static prefix is unchanged
    assert server.requests[2].body["messages"][:2] == server.requests[0].body["messages"][:2]


async def test_gives_up_after_the_retries(fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(lambda request: Reply({"complete": False, "feedback": "wrong"}))
    with pytest.raises(StructuredOutputError, match="no valid Verdict in 2 attempts"):
        await call(server, Verdict, retries=1)
    assert len(server.requests) == 2


async def test_truncated_reply_is_named(fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(lambda request: Reply('{"intents": [{"descr', finish_reason="length"))
    with pytest.raises(StructuredOutputError, match="cut off at max_tokens"):
        await call(server, IntentList, retries=0)


async def test_reply_using_all_max_tokens_counts_as_cut_off(fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(lambda r: Reply('{"intents": [', finish_reason="tool_calls", completion_tokens=64))
    with pytest.raises(StructuredOutputError, match=r"cut off at max_tokens \(64\)"):
        await call(server, IntentList, retries=0, max_tokens=64)


async def test_reply_without_tool_call_is_retried(fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(sequence(Reply(content="Sure! Here are the intents."), Reply(GOOD)))
    result, _ = await call(server, IntentList)
    assert isinstance(result, IntentList) and len(server.requests) == 2


@pytest.mark.parametrize(
    ("field", "absent"), [("max_tokens", "max_completion_tokens"), ("max_completion_tokens", "max_tokens")]
)
async def test_max_tokens_is_sent_in_the_field_the_server_honours(
    fake_openai: Callable[..., FakeOpenAI], field: str, absent: str
) -> None:
    server = fake_openai(sequence(Reply(GOOD)))
    await call(server, IntentList, max_tokens=77, max_tokens_field=field)
    body = server.requests[0].body
    assert body[field] == 77 and absent not in body
