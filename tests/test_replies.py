"""Reading a chat completion's JSON: the fields aidsafe uses, and malformed replies read as empty."""

from __future__ import annotations

import pytest

from aidsafe.replies import Reply

GOOD = {
    "choices": [{"finish_reason": "tool_calls", "message": {"content": None, "tool_calls": [
        {"type": "function", "function": {"name": "Other", "arguments": "{}"}},
        {"type": "function", "function": {"name": "Draft", "arguments": '{"response": "ok"}'}},
    ]}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
}  # fmt: skip


def test_the_named_tools_arguments_and_the_usage_are_read() -> None:
    reply = Reply(GOOD)
    assert reply.tool_arguments("Draft") == '{"response": "ok"}'
    assert reply.tool_arguments("Verdict") is None
    assert reply.finish_reason == "tool_calls" and reply.content == ""
    assert reply.usage() == {"calls": 1, "input_tokens": 12, "output_tokens": 3}


def test_a_plain_text_reply_gives_its_content() -> None:
    reply = Reply({"choices": [{"finish_reason": "stop", "message": {"content": "Hello."}}]})
    assert reply.content == "Hello." and reply.tool_arguments("Draft") is None and reply.output_tokens == 0


@pytest.mark.parametrize(
    "data",
    [None, "not json", [], {}, {"choices": []}, {"choices": "x"}, {"choices": [None]},
     {"choices": [{"message": {"tool_calls": 5}}]}, {"choices": [{"message": {"tool_calls": ["x", None]}}]},
     {"choices": [{"message": {"tool_calls": [{"function": "Draft"}]}}], "usage": {"prompt_tokens": "9"}}],
)  # fmt: skip
def test_a_malformed_reply_reads_as_no_tool_call_and_no_tokens(data: object) -> None:
    reply = Reply(data)
    assert reply.tool_arguments("Draft") is None
    assert reply.content == "" and reply.finish_reason is None
    assert reply.usage()["input_tokens"] == 0 and reply.output_tokens == 0


def test_a_tool_call_without_string_arguments_reads_as_empty_arguments() -> None:
    data = {"choices": [{"message": {"tool_calls": [{"function": {"name": "Draft", "arguments": None}}]}}]}
    assert Reply(data).tool_arguments("Draft") == "{}"
