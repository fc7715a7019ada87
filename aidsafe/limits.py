"""The in-flight cap of one endpoint (base URL), shared by every partition and stage of a process.

A vLLM or OpenAI-class endpoint wants 64-256 requests in flight; the embedded server takes one at a time.
The cap is the endpoint's max_in_flight. When the endpoint answers 429, the limit is halved and no new
request starts before its Retry-After has passed; then every `limit` answers without a 429 raise it by one
again, up to max_in_flight (additive increase, multiplicative decrease, as TCP does). The 429s of requests
sent before the last halving are answers to that same overload: they extend the pause but halve nothing.
All of it runs on the process's one LLM event loop (aidsafe.llm_io), so no lock is needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from types import TracebackType

log = logging.getLogger(__name__)
MAX_PAUSE = 60.0  # seconds: the longest Retry-After honoured (openai's client caps its own wait the same)


class EndpointLimit:
    """`async with limit:` around each request to the endpoint."""

    def __init__(self, base_url: str, cap: int) -> None:
        self.base_url = base_url
        self.cap = cap
        self.limit = cap
        self.in_flight = 0
        self.throttles = 0  # 429s seen
        self._resume_at = 0.0  # monotonic time before which no request starts
        self._since_change = 0
        self._epoch = 0  # halvings so far: a request sent in an earlier epoch halves nothing
        self._waiting: deque[asyncio.Future[None]] = deque()

    def lower_cap(self, cap: int) -> None:
        """Another role on the same base URL asks for fewer requests in flight: the lowest cap wins."""
        self.cap = min(self.cap, cap)
        self.limit = min(self.limit, self.cap)

    async def __aenter__(self) -> int:
        """Wait for a slot; returns the epoch the request is sent in (for throttled)."""
        while self.in_flight >= self.limit or time.monotonic() < self._resume_at:
            pause = self._resume_at - time.monotonic()
            if pause > 0 and self.in_flight < self.limit:
                await asyncio.sleep(pause)
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self.in_flight += 1
        return self._epoch

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def answered(self) -> None:
        """A reply that was not a 429: after `limit` of them in a row, one more request may be in flight."""
        if self.limit >= self.cap:
            return
        self._since_change += 1
        if self._since_change >= self.limit:
            self.limit, self._since_change = self.limit + 1, 0
            self._wake()

    def throttled(self, retry_after: float | None, epoch: int | None = None) -> None:
        """A 429 to a request sent in `epoch` (None: now): start nothing before Retry-After (1 s when the
        server gives none), and halve the limit unless it was halved since the request was sent."""
        self.throttles += 1
        pause = min(MAX_PAUSE, retry_after if retry_after is not None else 1.0)
        self._resume_at = max(self._resume_at, time.monotonic() + pause)
        if epoch is not None and epoch != self._epoch:
            return
        self._epoch += 1
        lowered = max(1, self.limit // 2)
        if lowered < self.limit:
            log.warning("%s answered 429: %d requests in flight at most now (max_in_flight %d), "
                        "resuming in %.1f s", self.base_url, lowered, self.cap, pause)  # fmt: skip
        self.limit, self._since_change = lowered, 0


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    """Seconds from retry-after-ms or retry-after (seconds; an HTTP date is not parsed: None)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
