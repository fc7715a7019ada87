"""Shared fixtures: the default policies and prompts, a scripted model that records what it was asked,
the OpenAI-compatible test server, and a real (temporary) Prefect API for flow tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from aidsafe.calls import RowCalls
from aidsafe.config import DEFAULT_POLICIES, DEFAULT_PROMPTS, Settings, load_settings
from aidsafe.errors import StructuredOutputError
from aidsafe.policies import PolicySet, load_policies
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.stage import RowContext
from aidsafe.usage import Usage
from graphs.context import Context
from tests.openai_server import FakeOpenAI, Script, default_script

Messages = list[tuple[str, str]]


class ScriptedModel:
    """A StructuredCaller that replays scripted replies and records every prompt it was given."""

    def __init__(
        self,
        role: str,
        replies: list[Any] | Callable[[Messages], Any],  # replies (models, or texts), or exceptions
    ) -> None:
        self.role = role
        self.model_name = f"scripted-{role}"
        self._replies = replies
        self.calls: list[Messages] = []

    async def call(self, schema: type[Any], messages: Messages, check: Any = None) -> tuple[Any, Usage]:
        self.calls.append(messages)
        if callable(self._replies):
            reply: BaseModel | Exception = self._replies(messages)
        else:
            if not self._replies:
                raise AssertionError(f"{self.role}: no scripted reply left for {schema.__name__}")
            reply = self._replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, schema), f"{self.role} asked for {schema.__name__}, script has {type(reply)}"
        if check is not None:
            try:
                check(reply)
            except ValueError as exc:  # as a real model does when its retries fail the row's check
                raise StructuredOutputError(f"{self.role}: {exc}") from exc
        return reply, Usage(calls=1, input_tokens=sum(len(m[1]) for m in messages) // 4, output_tokens=10)

    async def text(self, messages: Messages, fork: str | None = None) -> tuple[str, Usage]:
        """A plain reply: the script's replies are then texts (or a function of the messages to one); a
        fork is recorded as a last ("fork", token) message."""
        messages = [*messages, ("fork", fork)] if fork else messages
        self.calls.append(messages)
        reply: Any = self._replies(messages) if callable(self._replies) else self._replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, str), f"{self.role}: a plain reply must be a text, script has {type(reply)}"
        return reply, Usage(calls=1, input_tokens=sum(len(m[1]) for m in messages) // 4, output_tokens=10)


@pytest.fixture(scope="session")
def policy_set() -> PolicySet:
    return load_policies(DEFAULT_POLICIES)


@pytest.fixture(scope="session")
def prompts(policy_set: PolicySet) -> PromptSet:
    return load_prompts(DEFAULT_PROMPTS, policy_set.render())


@pytest.fixture
def make_context(prompts: PromptSet) -> Callable[..., Context]:
    """The graph's context over scripted models (through the real RowCalls)."""

    def make(models: dict[str, ScriptedModel], max_rounds: int = 4, **options: Any) -> Context:
        """options: the other Context fields (deliberation_end, focus)."""
        agents = tuple(sorted(r for r in models if r.startswith("agent")))
        return Context(RowCalls(models, prompts), agents, max_rounds, **options)

    return make


@pytest.fixture
def row_context(prompts: PromptSet, policy_set: PolicySet) -> Callable[..., RowContext]:
    """A stage's row context over scripted models: row_context(models, settings=None)."""

    def make(models: dict[str, ScriptedModel], settings: Settings | None = None) -> RowContext:
        return RowContext(RowCalls(models, prompts), settings or load_settings(env={}), policy_set, prompts)

    return make


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    """Start test servers: fake_openai(script, latency=0.0, faults=None); stopped at the end of the test."""
    servers: list[FakeOpenAI] = []

    def start(script: Script = default_script, latency: float = 0.0, **extra: Any) -> FakeOpenAI:
        server = FakeOpenAI(script, latency, **extra).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real, temporary Prefect API server for the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with the embedded model converted once for the session (about half a minute): the base of
    the training runs."""
    from aidsafe.embedded import locate_model
    from aidsafe.hf import embedded_checkpoint

    directory = tmp_path_factory.mktemp("cache")
    embedded_checkpoint(directory, locate_model())
    return directory


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint from the developer's environment leaks into a test."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AIDSAFE_MODEL"):
        monkeypatch.delenv(name, raising=False)


def write_partition(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
