"""One event loop per process for the LLM calls of every partition running in it, and its connections.

Partition tasks run in Prefect's worker threads. Each used to run its rows in an event loop of its own:
four busy event loops then fought over the GIL, and each had its own HTTP client, so connections were not
shared. Now each task hands its rows to this process's LLM loop (a daemon thread) and waits: one loop,
one HTTP client (openai's aiohttp client: cheaper per request than httpx at 64+ in flight), and one
in-flight limit per base URL (aidsafe.limits) shared by every partition and stage. Clients are built inside
the loop that uses them, never shared across loops ("Event loop is closed"). A forked or spawned worker
process (Dask, Ray) starts its own loop on first use: nothing of it travels with a task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import threading
from collections.abc import Callable, Coroutine, Hashable
from types import TracebackType
from typing import Any, TypeVar

import httpx2
import openai
from openai._vendor.httpx_aiohttp import AiohttpTransport  # what openai.DefaultAioHttpClient uses

from aidsafe.limits import EndpointLimit, retry_after_seconds

R = TypeVar("R")
GC_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
MAX_CONNECTIONS = 4096  # the pool never binds before max_in_flight (at most 4096) does


class _LimitedTransport(httpx2.AsyncBaseTransport):
    """Every HTTP request, also each retry openai's client makes itself, waits for a slot of its endpoint's
    limit; a 429 lowers that limit (aidsafe.limits), any other answer lets it grow back."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limits: dict[str, EndpointLimit]) -> None:
        self._inner = inner
        self._limits = limits

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        limit = next((lim for key, lim in self._limits.items() if url.startswith(key)), None)
        if limit is None:
            return await self._inner.handle_async_request(request)
        async with limit as epoch:
            response = await self._inner.handle_async_request(request)
        if response.status_code == 429:
            headers = {k.lower(): v for k, v in response.headers.items()}
            limit.throttled(retry_after_seconds(headers), epoch)
        else:
            limit.answered()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class Connections:
    """The HTTP client and the per-base-URL in-flight limits of one event loop; `async with` closes them."""

    def __init__(self) -> None:
        self.limits: dict[str, EndpointLimit] = {}
        self._made: dict[Hashable, Any] = {}
        pool = httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        transport = _LimitedTransport(AiohttpTransport(limits=pool), self.limits)
        self.http = openai.DefaultAioHttpClient(transport=transport)

    def limit(self, base_url: str, cap: int) -> EndpointLimit:
        """The limit of a base URL (its lowest max_in_flight when roles on it differ)."""
        key = base_url.rstrip("/")
        if key not in self.limits:
            self.limits[key] = EndpointLimit(key, cap)
        self.limits[key].lower_cap(cap)
        return self.limits[key]

    def reuse(self, key: Hashable, make: Callable[[], R]) -> R:
        """What make() returns, made once per loop for key: each endpoint's client serves every partition
        of the process (a client made per partition paid its set-up, and a thread hop, on every row)."""
        if key not in self._made:
            self._made[key] = make()
        made: R = self._made[key]
        return made

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()


def _long_lived_heap() -> None:
    """Keep the garbage collector off what is loaded already (modules, clients, settings): thousands of rows
    in flight allocate fast, and each full collection would walk every object of the process again."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


class LlmLoop:
    """The process's LLM event loop thread, started on first use (again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: Connections | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                _long_lived_heap()
                self._pid, self._loop, self._connections = os.getpid(), asyncio.new_event_loop(), None
                thread = threading.Thread(target=self._loop.run_forever, name="aidsafe-llm-loop", daemon=True)
                thread.start()
            return self._loop

    async def _with_connections(self, work: Callable[[Connections], Coroutine[Any, Any, R]]) -> R:
        if self._connections is None:  # made inside the loop that will use it
            self._connections = Connections()
        return await work(self._connections)

    def run(
        self, work: Callable[[Connections], Coroutine[Any, Any, R]], tick: Callable[[], None] | None = None,
        every: float = 1.0,
    ) -> R:  # fmt: skip
        """Run work(connections) on the LLM loop and wait for it; leaving early cancels it.

        While waiting, the calling thread calls tick() every `every` seconds: what is slow or blocking
        (progress artifacts over HTTP, log handlers) runs there, never on the loop that all rows share.
        """
        future = asyncio.run_coroutine_threadsafe(self._with_connections(work), self._running_loop())
        try:
            while not future.done():
                concurrent.futures.wait([future], timeout=every if tick else None)
                if tick and not future.done():
                    tick()
            return future.result()
        except BaseException:
            future.cancel()
            raise


LLM_LOOP = LlmLoop()
