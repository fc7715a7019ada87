"""Ctrl-C and SIGTERM end a command within seconds: finished partitions kept, helper servers stopped.

Both signals set STOPPING, on which every running partition cancels its rows in flight and fails with
Interrupted (never retried; its finished rows are checkpointed), and raise KeyboardInterrupt in the main
thread: Prefect marks the flow runs Crashed as it unwinds, and the helper servers' context managers stop
them. A watchdog armed by the signal ends
the process if unwinding takes longer than GRACE seconds, and a second signal ends it at once; both stop
the helper servers first; partitions are written whole by rename, so nothing half-written is left, and
the next run redoes what was unfinished.
The exit code is 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from aidsafe import children
from aidsafe.errors import Interrupted

T = TypeVar("T")

GRACE = 7.0  # seconds the command has to unwind after a signal, within the promised 10
STOPPING = threading.Event()  # set by the first signal: partitions stop their rows


class Interrupts:
    """Which signal interrupted the command, if one did."""

    signum: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def exit_now(code: int) -> None:
    """Stop the helper servers and end the process without waiting for worker threads."""
    children.stop_all(timeout=2.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def interrupts() -> Iterator[Interrupts]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt with a deadline, for the block (main thread only)."""
    state = Interrupts()

    def handler(signum: int, frame: FrameType | None) -> None:
        if state.signum is not None:  # a second signal: stop now
            exit_now(128 + signum)
        state.signum = signum
        STOPPING.set()
        watchdog = threading.Timer(GRACE, exit_now, args=(128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        STOPPING.clear()


@contextmanager
def rows_stop_on_interrupt() -> Iterator[None]:
    """Around a flow's wait for its partitions: an interrupt leaving the block sets STOPPING at once.

    Needed for SIGTERM: inside a flow Prefect's own handler takes it first (raising its TerminationSignal)
    and passes it on to ours only after the flow has unwound, which waits for the partitions.
    """
    from prefect.exceptions import ExternalSignal

    try:
        yield
    except (KeyboardInterrupt, ExternalSignal):
        STOPPING.set()
        raise


async def until_stopped(work: Awaitable[T], poll: float = 0.1) -> T:
    """Await work, cancelling it and raising Interrupted as soon as STOPPING is set."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=poll)
        if STOPPING.is_set() and not task.done():
            task.cancel()
            raise Interrupted("interrupted: the partition stopped, its finished rows are checkpointed")
    return task.result()
