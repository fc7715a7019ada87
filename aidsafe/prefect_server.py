"""The temporary Prefect API of a command run without PREFECT_API_URL, started and stopped by aidsafe.

Prefect would start the same server itself (its "ephemeral" API), but in aidsafe's process group: a
terminal's Ctrl-C then stops the server first, the flow retries its state updates against a dead server
without end, and after a SIGKILL the server survives as an orphan. aidsafe starts it instead as one of
its helper servers (aidsafe.children: own session, stopped with aidsafe, reaped by the next run), with the
command and settings Prefect uses, and points this process's Prefect settings at it for the block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from aidsafe.children import free_port, spawn, stop
from aidsafe.errors import AidsafeError


class PrefectServerError(AidsafeError):
    """The temporary Prefect API did not start."""


def _command(port: int) -> list[str]:
    import prefect

    return [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]  # fmt: skip


def _environment() -> dict[str, str]:
    """The child's environment as Prefect builds it for its own ephemeral server (no UI)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings().to_environment_variables(exclude_unset=True)
    server = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return {**os.environ, **server, **settings}


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectServerError(f"the temporary Prefect API exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise PrefectServerError(f"the temporary Prefect API did not start within {timeout:.0f} s; see {log}")


@contextmanager
def prefect_api(log_path: Path) -> Iterator[str | None]:
    """A Prefect API for the block: the configured one (PREFECT_API_URL), or a temporary one of ours."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if settings.api.url:
        yield settings.api.url
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = spawn("temporary Prefect API", _command(port), log, _environment())
    try:
        _wait_healthy(process, url, log_path, float(settings.server.ephemeral.startup_timeout_seconds))
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_logs()  # the run's last log lines, while the API is still there to take them
    finally:
        stop(process)


def _flush_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    with suppress(Exception):  # never let log shipping hide the command's own outcome
        APILogHandler().flush()
