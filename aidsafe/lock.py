"""One writer per output directory: an exclusive lock held while a command or flow writes there.

The lock is an flock on OUTPUT/.aidsafe.lock, which the kernel releases when the holder dies (even by
SIGKILL), so a stale lock from a dead process is taken over without any clean-up. The file records the
holder's pid, host and command, for the message a second writer gets. Re-entrant within a process: the
run flow, its stage subflows and their tasks share the one lock of their process.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aidsafe.errors import AidsafeError

LOCK_NAME = ".aidsafe.lock"
_held: dict[Path, tuple[int, int]] = {}  # directory -> (file descriptor, depth)
_guard = threading.Lock()


class OutputLocked(AidsafeError):
    """Another live process is writing to the same output directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} ({info['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def _acquire(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputLocked(
            f"{directory}: in use by {_holder(path)}; wait for it or use another --output"
        ) from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:3])}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode())
    return fd


@contextmanager
def output_lock(directory: Path | str) -> Iterator[None]:
    """Hold the output directory's lock for the block (re-entrant in this process)."""
    key = Path(directory).resolve()
    with _guard:
        fd, depth = _held.get(key, (-1, 0))
        if depth == 0:
            fd = _acquire(key)
        _held[key] = (fd, depth + 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth == 1:
                del _held[key]
                os.close(fd)  # releases the flock
            else:
                _held[key] = (fd, depth - 1)
