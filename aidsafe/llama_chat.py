"""The embedded server's chat format: ChatML with forced tool calls, the pipeline's text placed verbatim.

llama-cpp-python's own `chatml-function-calling` format renders the messages through a Jinja environment with
HTML autoescape on, so the model read `&lt;user_prompt&gt;` for `<user_prompt>` and `Merkel&#39;s` for
`Merkel's`, and copied the entities into its replies. This format lays the prompt out the same way (the
texts of policies/prompts/chat_format.toml) by plain string joining: no template engine, nothing escaped.
It is registered under aidsafe's own name (CHAT_FORMAT) with llama-cpp-python's public register_chat_format;
llama-cpp-python's handler for chat formats then tokenizes the prompt and, for a forced tool call, constrains
the reply to the tool's JSON schema and returns it as a tool call (as chatml-function-calling did).
Importing this module registers the format: the server process does it (aidsafe.llama_server).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format
from pydantic import BaseModel, ConfigDict, ValidationError

from aidsafe.config import DEFAULT_PROMPTS
from aidsafe.embedded import CHAT_FORMAT
from aidsafe.errors import PolicyError

TEXTS_FILE = DEFAULT_PROMPTS / "chat_format.toml"
START, END = "<|im_start|>", "<|im_end|>"
Message = Mapping[str, Any]
Tool = Mapping[str, Any]


class ChatTexts(BaseModel):
    """The schema of chat_format.toml: the texts around the messages (${name}, ${parameters} as marked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: str
    function: str  # ${name}, ${parameters}
    instructions: str
    call: str  # ${name}
    message: str


def load_texts(path: Path = TEXTS_FILE) -> ChatTexts:
    try:
        return ChatTexts.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PolicyError(path, str(exc)) from exc


def forced_tool(tools: Sequence[Tool] | None, tool_choice: Any) -> Tool | None:
    """The tool the reply must call, or None for a plain reply (no tools, or tool_choice none or absent)."""
    if not tools or tool_choice is None or tool_choice == "none":
        return None
    if not isinstance(tool_choice, Mapping):
        raise ValueError(f"{CHAT_FORMAT} takes tool_choice none or a named function, not {tool_choice!r}")
    name = tool_choice["function"]["name"]
    for tool in tools:
        if tool["function"]["name"] == name:
            return tool
    raise ValueError(f"tool_choice names {name!r}, which is not among the tools")


def _text(content: Any) -> str:
    """A message's content as text: a string as it is, a list of text parts joined, None as nothing."""
    if content is None or isinstance(content, str):
        return content or ""
    if any(part.get("type") != "text" for part in content):
        raise ValueError(f"{CHAT_FORMAT} takes text content only")
    return "".join(part["text"] for part in content)


def _tools_block(tools: Sequence[Tool], texts: ChatTexts) -> str:
    """The tools after the system message: each one's name and JSON schema, then how to call one."""
    functions = "".join(
        Template(texts.function).substitute(
            name=tool["function"]["name"],
            parameters=json.dumps(tool["function"].get("parameters", {}), ensure_ascii=False),
        )
        for tool in tools
    )
    return texts.tools + functions + texts.instructions


def _body(message: Message, tools_block: str, texts: ChatTexts) -> str:
    """What follows `<|im_start|>{role}\\n` for one message (tools_block: empty when no tool is forced)."""
    text = _text(message.get("content"))
    if message["role"] == "system":
        return text + tools_block + END + "\n"
    if message["role"] != "assistant":
        return text + END + "\n"
    body = f"{texts.message if tools_block else ''}{text}{END}\n" if text else ""
    calls = [c["function"] for c in message.get("tool_calls") or []]
    if calls:
        call = Template(texts.call)
        body += "".join(call.substitute(name=c["name"]) + c["arguments"] for c in calls) + END + "\n"
    return body


def render(
    messages: Sequence[Message], tools: Sequence[Tool] | None, tool_choice: Any, texts: ChatTexts
) -> str:
    """The prompt the model is fed: each message's text exactly as sent, in ChatML; a forced call's tools
    described after the system message, and the reply started with the call."""
    forced = forced_tool(tools, tool_choice)
    block = _tools_block(tools or [], texts) if forced else ""
    prompt = "".join(f"{START}{m['role']}\n{_body(m, block, texts)}" for m in messages)
    call = Template(texts.call).substitute(name=forced["function"]["name"]) if forced else ""
    return f"{prompt}{START}assistant\n{call}"


def _from_legacy(tools: Any, tool_choice: Any, functions: Any, function_call: Any) -> tuple[Any, Any]:
    """The legacy request fields `functions` and `function_call` as tools and tool_choice."""
    if functions is not None:
        tools = [{"type": "function", "function": function} for function in functions]
    if isinstance(function_call, str):
        tool_choice = function_call
    elif isinstance(function_call, Mapping) and "name" in function_call:
        tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
    return tools, tool_choice


_TEXTS = load_texts()  # at import: a bad file stops the server at start-up, not at its first request


@register_chat_format(CHAT_FORMAT)
def chatml_tools(
    *, messages: list[Any], tools: Any = None, tool_choice: Any = None, functions: Any = None,
    function_call: Any = None, **_: Any,
) -> ChatFormatterResponse:  # fmt: skip
    tools, tool_choice = _from_legacy(tools, tool_choice, functions, function_call)
    return ChatFormatterResponse(prompt=render(messages, tools, tool_choice, _TEXTS), stop=END)
