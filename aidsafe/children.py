"""The helper servers a command starts (the embedded model server, the temporary Prefect API).

Each runs in its own session, so a terminal's Ctrl-C (sent to the whole foreground process group) reaches
only aidsafe, which then stops its servers in order instead of losing them first. On Linux the kernel
signals each one when aidsafe dies, even by SIGKILL (PR_SET_PDEATHSIG). Each is also recorded in a
per-user runtime directory with its parent; the next command stops any whose parent is gone
(`reap_orphans`), which covers what the kernel's signal does not (a server that ignores it, another OS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
_running: dict[int, subprocess.Popen[bytes]] = {}  # pid -> process, the servers of this process


def records_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"aidsafe-{os.getuid()}" / "children"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_time(pid: int) -> int | None:
    """The running process's start time in clock ticks since boot (tells a pid from a later reuse of it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    return None if fields[0] in ("Z", "X") else int(fields[19])  # a zombie is gone; field 22 is starttime


def _dies_with_parent(death_signal: int) -> Callable[[], None]:
    def arm() -> None:  # pragma: no cover - runs in the child before exec
        """Linux: have the kernel signal the child when aidsafe dies, even by SIGKILL."""
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, death_signal)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return arm


def spawn(
    name: str, command: list[str], log: IO[bytes], env: Mapping[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a helper server: own session, sent death_signal when its parent dies, recorded for the next run.

    death_signal: SIGTERM for a server with state to close; SIGKILL for one without (a model server would
    otherwise finish its completion in flight first).
    """
    arm = _dies_with_parent(death_signal) if sys.platform == "linux" else None
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True, preexec_fn=arm,
    )  # fmt: skip
    _running[process.pid] = process
    record = {"name": name, "pid": process.pid, "started": start_time(process.pid)}
    record |= {"parent": os.getpid(), "parent_started": start_time(os.getpid())}
    records_dir().mkdir(parents=True, exist_ok=True)
    (records_dir() / f"{process.pid}.json").write_text(json.dumps(record))
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`; forget its record."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    _running.pop(process.pid, None)
    (records_dir() / f"{process.pid}.json").unlink(missing_ok=True)


def stop_all(timeout: float = STOP_TIMEOUT) -> None:
    """Stop every helper server this process started and has not stopped (on an interrupt)."""
    for process in list(_running.values()):
        stop(process, timeout)


def _alive(pid: int, started: Any) -> bool:
    return started is not None and start_time(pid) == started


def _kill(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and start_time(pid) is not None:
            time.sleep(0.05)
        if start_time(pid) is None:
            return


def reap_orphans() -> list[str]:
    """Stop the helper servers of aidsafe processes that are gone; describe each one stopped."""
    stopped = []
    for path in sorted(records_dir().glob("*.json")) if records_dir().is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _alive(record["parent"], record["parent_started"]):
            continue  # its aidsafe is still running: not ours to stop
        if _alive(record["pid"], record["started"]):
            _kill(record["pid"])
            stopped.append(f"{record['name']} (pid {record['pid']}) of a killed run (pid {record['parent']})")
        path.unlink(missing_ok=True)
    return stopped
