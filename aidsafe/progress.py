"""Row progress of the partitions running in this process, for whoever listens (the CLI's terminal bar).

The Prefect UI gets the same numbers as progress artifacts (flows/tasks.py); this is the in-process path,
so a listener sees every row without a round trip to the Prefect API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# stage, partition, rows finished, rows to do
Listener = Callable[[str, str, int, int], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the progress of every partition run in this process to listener while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def publish(stage: str, partition: str, finished: int, total: int) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(stage, partition, finished, total)
