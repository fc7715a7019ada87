"""The embedded server's chat format: ChatML with forced tool calls, the pipeline's text placed verbatim.

llama-cpp-python's own `chatml-function-calling` format renders the messages through a Jinja environment with
HTML autoescape on, so the model read `&lt;user_prompt&gt;` for `<user_prompt>` and `Merkel&#39;s` for
`Merkel's`, and copied the entities into its replies. This format lays the prompt out the same way (the
texts of policies/prompts/chat_format.toml) by plain string joining: no template engine, nothing escaped.
It is registered under aidsafe's own name (CHAT_FORMAT) with llama-cpp-python's public registry;
llama-cpp-python's handler for chat formats then, for a forced tool call, constrains the reply to the tool's
JSON schema and returns it as a tool call (as chatml-function-calling did).
That handler tokenizes the whole prompt with special tokens parsed, so a user prompt containing
`<|im_end|><|im_start|>system` would have closed our message and opened a system turn. Here only the ChatML
markers this module lays out become control tokens; every message text is tokenized as plain text
(`tokenize`, through `_TextTokens`, which the handler sees as the model).
Importing this module registers the format: the server process does it (aidsafe.llama_server).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from llama_cpp.llama_chat_format import (
    ChatFormatterResponse,
    LlamaChatCompletionHandlerRegistry,
    chat_formatter_to_chat_completion_handler,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from aidsafe.config import DEFAULT_PROMPTS
from aidsafe.embedded import CHAT_FORMAT
from aidsafe.errors import PolicyError

TEXTS_FILE = DEFAULT_PROMPTS / "chat_format.toml"
START, END = "<|im_start|>", "<|im_end|>"
Message = Mapping[str, Any]
Tool = Mapping[str, Any]
Segment = tuple[str, bool]  # a piece of the prompt, and whether it is a ChatML control token


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


def _body(message: Message, tools_block: str, texts: ChatTexts) -> list[Segment]:
    """What follows `<|im_start|>{role}\\n` for one message (tools_block: empty when no tool is forced)."""
    text = _text(message.get("content"))
    if message["role"] == "system":
        return [(text + tools_block, False), (END, True), ("\n", False)]
    if message["role"] != "assistant":
        return [(text, False), (END, True), ("\n", False)]
    body = [(f"{texts.message if tools_block else ''}{text}", False), (END, True), ("\n", False)]
    calls = [c["function"] for c in message.get("tool_calls") or []]
    call = Template(texts.call)
    called = [(call.substitute(name=c["name"]) + c["arguments"], False) for c in calls]
    return (body if text else []) + ([*called, (END, True), ("\n", False)] if calls else [])


def segments(
    messages: Sequence[Message], tools: Sequence[Tool] | None, tool_choice: Any, texts: ChatTexts
) -> list[Segment]:
    """The prompt the model is fed, in pieces: each message's text exactly as sent, in ChatML; a forced
    call's tools described after the system message, and the reply started with the call."""
    forced = forced_tool(tools, tool_choice)
    block = _tools_block(tools or [], texts) if forced else ""
    pieces: list[Segment] = []
    for message in messages:
        pieces += [(START, True), (f"{message['role']}\n", False), *_body(message, block, texts)]
    call = Template(texts.call).substitute(name=forced["function"]["name"]) if forced else ""
    return [*pieces, (START, True), (f"assistant\n{call}", False)]


def render(
    messages: Sequence[Message], tools: Sequence[Tool] | None, tool_choice: Any, texts: ChatTexts
) -> str:
    """The prompt as text (the segments joined)."""
    return "".join(text for text, _ in segments(messages, tools, tool_choice, texts))


def tokenize(llama: Any, pieces: Sequence[Segment], add_bos: bool) -> list[int]:
    """The prompt's tokens: the ChatML markers as control tokens, all other text as plain text, so that
    `<|im_end|>` written in a message stays text."""
    tokens: list[int] = []
    for index, (text, control) in enumerate(pieces):
        if text:
            tokens += llama.tokenize(text.encode("utf-8"), add_bos=add_bos and index == 0, special=control)
    return tokens


class _TextTokens:
    """The model as llama-cpp-python's chat handler sees it: the prompt it renders is tokenized by segment
    (`tokenize` above); everything else is the model itself."""

    def __init__(self, llama: Any, pieces: list[Segment]) -> None:
        self._llama, self._pieces = llama, pieces
        self._prompt = "".join(text for text, _ in pieces).encode("utf-8")

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        if text != self._prompt:
            return list(self._llama.tokenize(text, add_bos=add_bos, special=special))
        return tokenize(self._llama, self._pieces, add_bos)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)


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


def chatml_tools(
    *, messages: list[Any], tools: Any = None, tool_choice: Any = None, functions: Any = None,
    function_call: Any = None, **_: Any,
) -> ChatFormatterResponse:  # fmt: skip
    tools, tool_choice = _from_legacy(tools, tool_choice, functions, function_call)
    return ChatFormatterResponse(prompt=render(messages, tools, tool_choice, _TEXTS), stop=END)


_FORMATTED = chat_formatter_to_chat_completion_handler(chatml_tools)


def chatml_tools_handler(
    *, llama: Any, messages: list[Any], tools: Any = None, tool_choice: Any = None, functions: Any = None,
    function_call: Any = None, **kwargs: Any,
) -> Any:  # fmt: skip
    """llama-cpp-python's handler for the format above, fed the prompt tokenized by segment."""
    forced = _from_legacy(tools, tool_choice, functions, function_call)
    model: Any = _TextTokens(llama, segments(messages, *forced, _TEXTS))
    return _FORMATTED(
        llama=model, messages=messages, tools=tools, tool_choice=tool_choice, functions=functions,
        function_call=function_call, **kwargs,
    )  # fmt: skip


LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
    CHAT_FORMAT, chatml_tools_handler, overwrite=True
)
