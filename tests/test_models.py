"""The model factory and structured calls, over real HTTP against the test server."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from aidsafe.config import DEFAULT_PROMPTS, Endpoint
from aidsafe.errors import StructuredOutputError
from aidsafe.llm_io import Connections
from aidsafe.models import chat_role
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.usage import Usage
from graphs.schemas import IntentList, Verdict
from tests.openai_server import FakeOpenAI, Reply, Request

MESSAGES = [("system", "You list intents."), ("human", "<user_prompt>\nhi\n</user_prompt>")]
GOOD = {"intents": [{"description": "Say hello.", "source": "explicit", "kind": "benign"}]}


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


async def call(
    server: FakeOpenAI, schema: type, retries: int = 2, prompts: PromptSet | None = None, **extra: object
) -> tuple[Any, Usage]:
    prompts = prompts or load_prompts(DEFAULT_PROMPTS, "The policies.")
    async with Connections() as connections:
        ep = endpoint(server, structured_retries=retries, **extra)
        return await chat_role("intent", ep, connections, prompts).call(schema, MESSAGES)


def tool_sent(server: FakeOpenAI, number: int = 0) -> dict[str, Any]:
    tool: dict[str, Any] = server.requests[number].body["tools"][0]["function"]
    return tool


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


async def test_a_raw_newline_inside_a_json_string_is_accepted(fake_openai: Callable[..., FakeOpenAI]) -> None:
    arguments = '{"intents": [{"description": "Say\nhello.", "source": "explicit", "kind": "benign"}]}'
    server = fake_openai(sequence(Reply(arguments)))  # a literal newline: not valid strict JSON
    result, usage = await call(server, IntentList, retries=0)
    assert result.intents[0].description == "Say\nhello." and usage["calls"] == 1


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


# --- what is sent comes from the prompt files -----------------------------------------------------------


async def test_the_tool_sent_carries_the_descriptions_of_the_file(
    fake_openai: Callable[..., FakeOpenAI], prompts: PromptSet
) -> None:
    server = fake_openai(sequence(Reply(GOOD)))
    await call(server, IntentList, prompts=prompts)
    tool = tool_sent(server)
    assert tool == prompts.tool(IntentList)["function"]
    assert tool["description"].startswith("The intents behind the user prompt")
    intent = tool["parameters"]["properties"]["intents"]["items"]
    assert intent["properties"]["kind"]["description"].startswith("benign, or possibly_harmful")


async def test_editing_tools_toml_changes_the_tool_sent(
    fake_openai: Callable[..., FakeOpenAI], tmp_path: Path, policy_set: PolicySet
) -> None:
    directory = Path(shutil.copytree(DEFAULT_PROMPTS, tmp_path / "prompts"))
    path = directory / "tools.toml"
    text = path.read_text(encoding="utf-8")
    edited = text.replace('description = "The intent, in one sentence"', 'description = "Edited: one verb"')
    path.write_text(edited, encoding="utf-8")
    server = fake_openai(sequence(Reply(GOOD)))
    await call(server, IntentList, prompts=load_prompts(directory, policy_set.render()))
    intent = tool_sent(server)["parameters"]["properties"]["intents"]["items"]
    assert intent["properties"]["description"]["description"] == "Edited: one verb"


async def test_the_intents_count_sent_is_the_schemas_bounds(
    fake_openai: Callable[..., FakeOpenAI], prompts: PromptSet
) -> None:
    server = fake_openai(sequence(Reply(GOOD)))
    await call(server, IntentList, prompts=prompts)
    bounds = IntentList.model_json_schema()["properties"]["intents"]
    low, high = bounds["minItems"], bounds["maxItems"]
    described = tool_sent(server)["parameters"]["properties"]["intents"]["description"]
    assert f"{low} and {high}" in described and "five" not in described.lower()


async def test_the_retry_instruction_sent_is_the_files_text(
    fake_openai: Callable[..., FakeOpenAI], tmp_path: Path, policy_set: PolicySet
) -> None:
    directory = Path(shutil.copytree(DEFAULT_PROMPTS, tmp_path / "prompts"))
    (directory / "fragments.toml").write_text(
        (directory / "fragments.toml")
        .read_text(encoding="utf-8")
        .replace("Your previous reply was invalid (${reason})", "Wrong reply, because ${reason}!"),
        encoding="utf-8",
    )
    server = fake_openai(sequence(Reply({"intents": []}), Reply(GOOD)))
    await call(server, IntentList, prompts=load_prompts(directory, policy_set.render()))
    retry = server.requests[1].user
    assert retry.startswith("Wrong reply, because intents: ") and retry.endswith(
        "Call IntentList again, briefly."
    )
