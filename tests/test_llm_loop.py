"""The process's LLM loop: slow work runs in the waiting thread, and one client serves each endpoint."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import SecretStr

from aidsafe.config import DEFAULT_PROMPTS, Endpoint
from aidsafe.llm_io import LLM_LOOP, Connections
from aidsafe.models import chat_role
from aidsafe.prompts import load_prompts


def test_tick_runs_in_the_waiting_thread_while_the_work_runs_and_not_after() -> None:
    ticks: list[str] = []
    loop_threads: list[str] = []

    async def work(connections: Connections) -> str:
        loop_threads.append(threading.current_thread().name)
        await asyncio.sleep(0.35)
        return "done"

    def tick() -> None:
        ticks.append(threading.current_thread().name)

    assert LLM_LOOP.run(work, tick, every=0.1) == "done"
    assert loop_threads == ["aidsafe-llm-loop"]
    assert 2 <= len(ticks) <= 4 and set(ticks) == {threading.current_thread().name}
    count = len(ticks)
    LLM_LOOP.run(lambda connections: asyncio.sleep(0), tick, every=0.1)
    assert len(ticks) == count  # work done before the first interval: no tick


def test_an_error_of_the_work_reaches_the_caller_and_ticks_stop() -> None:
    ticks: list[int] = []

    async def work(connections: Connections) -> None:
        await asyncio.sleep(0.15)
        raise ValueError("bad row handling")

    with pytest.raises(ValueError, match="bad row handling"):
        LLM_LOOP.run(work, lambda: ticks.append(1), every=0.05)
    count = len(ticks)
    assert count >= 1
    LLM_LOOP.run(lambda connections: asyncio.sleep(0.1))
    assert len(ticks) == count


def _endpoint(url: str, model: str = "m") -> Endpoint:
    return Endpoint(base_url=url, model=model, api_key=SecretStr("sk-test"))


def test_roles_of_one_endpoint_share_one_client_across_partitions_and_others_get_their_own() -> None:
    prompts = load_prompts(DEFAULT_PROMPTS, "The policies.")

    async def clients(connections: Connections) -> list[object]:
        first = chat_role("intent", _endpoint("http://a/v1"), connections, prompts)
        again = chat_role("drafter", _endpoint("http://a/v1"), connections, prompts)  # a later partition
        other_model = chat_role("agent1", _endpoint("http://a/v1", "m2"), connections, prompts)
        other_url = chat_role("agent2", _endpoint("http://b/v1"), connections, prompts)
        return [role._llm for role in (first, again, other_model, other_url)]

    first, again, other_model, other_url = LLM_LOOP.run(clients)
    assert first is again
    assert len({id(first), id(other_model), id(other_url)}) == 3
