"""The in-flight limit per endpoint: its cap, what a 429 does to it, and that partitions share it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aidsafe.config import Options
from aidsafe.execute import run_partition
from aidsafe.limits import EndpointLimit, retry_after_seconds
from aidsafe.llm_io import Connections
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stages.generate import GENERATE
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI
from tests.test_generation import job_for


async def _peak_in_flight(limit: EndpointLimit, tasks: int, hold: float = 0.01) -> int:
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with limit:
            peak = max(peak, limit.in_flight)
            await asyncio.sleep(hold)

    await asyncio.gather(*(one() for _ in range(tasks)))
    return peak


async def test_the_limit_lets_no_more_than_its_cap_in_flight() -> None:
    limit = EndpointLimit("http://model/v1", 3)
    assert await _peak_in_flight(limit, 20) == 3
    assert limit.in_flight == 0


async def test_a_429_halves_the_limit_and_holds_new_requests_for_its_retry_after() -> None:
    limit = EndpointLimit("http://model/v1", 8)
    limit.throttled(0.3)
    assert limit.limit == 4 and limit.throttles == 1
    started = time.monotonic()
    async with limit:
        waited = time.monotonic() - started
    assert 0.25 <= waited < 1.0
    assert await _peak_in_flight(limit, 12) == 4


async def test_answers_without_429_raise_the_limit_back_to_the_cap_and_no_further() -> None:
    limit = EndpointLimit("http://model/v1", 8)
    limit.throttled(0.0)
    limit.throttled(0.0)
    assert limit.limit == 2
    for _ in range(100):
        limit.answered()
    assert limit.limit == 8


def test_a_429_without_retry_after_pauses_one_second_and_never_below_one_in_flight() -> None:
    limit = EndpointLimit("http://model/v1", 2)
    for _ in range(5):
        limit.throttled(None)
    assert limit.limit == 1
    assert 0.9 < limit._resume_at - time.monotonic() <= 1.0


async def test_roles_on_one_base_url_share_one_limit_with_the_lowest_cap() -> None:
    async with Connections() as connections:
        first = connections.limit("http://model/v1/", 64)
        second = connections.limit("http://model/v1", 8)
        other = connections.limit("http://other/v1", 16)
    assert first is second and first.cap == 8 and other.cap == 16


RETRY_AFTER = [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after": "soon"}, None),
    ({}, None),
]


@pytest.mark.parametrize(("headers", "seconds"), RETRY_AFTER)
def test_retry_after_is_read_in_seconds_or_milliseconds(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_an_endpoint_at_capacity_is_backed_off_from_and_every_row_still_finishes(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    server = fake_openai(latency=0.05, overload_at=4, retry_after="1")
    job = job_for(tmp_path, server, policy_set, n=16, concurrency=16, max_in_flight=16, max_retries=4)
    result = run_partition(GENERATE, job, prompts)
    assert result.status == "done" and result.rows_ok == 16 and result.rows_failed == 0
    assert server.throttled_at, "the endpoint never answered 429: the test does not test backing off"
    first = server.throttled_at[0]
    # requests already on the way may still arrive; none is started during the Retry-After second
    arrivals = [t - first for t in server.arrived_at if 0.1 < t - first < 0.9]
    assert arrivals == []
    answered = len(server.arrived_at) - len(server.throttled_at)
    assert len(server.throttled_at) < answered / 2  # the limit came down instead of every row hammering it


async def test_the_429s_of_one_burst_halve_the_limit_once() -> None:
    limit = EndpointLimit("http://model/v1", 16)
    epochs = [await limit.__aenter__() for _ in range(12)]
    for epoch in epochs:
        limit.throttled(0.0, epoch)
        await limit.__aexit__(None, None, None)
    assert limit.limit == 8 and limit.throttles == 12
    async with limit as later:
        pass
    limit.throttled(0.0, later)  # sent after the halving: a new overload
    assert limit.limit == 4


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_max_in_flight_caps_the_requests_of_all_partitions_together(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(latency=0.05)
    for p in range(4):
        rows = [{"id": f"p{p}-{i}", "prompt": f"Question {i}?"} for i in range(6)]
        write_partition(tmp_path / "in" / f"part-{p}.parquet", rows)
    options = Options(base_url=server.base_url, model="m", concurrency=8, max_in_flight=3, workers=4)
    summary = FLOWS["generate"](input=str(tmp_path / "in"), output=str(tmp_path / "out"), options=options)
    assert summary.rows_ok == 24
    assert server.max_in_flight == 3  # 4 partitions x 8 rows wanted 32 at once
    assert pq.read_table(tmp_path / "out" / "generated" / "part-3.parquet").num_rows == 6
