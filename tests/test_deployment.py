"""Deployments for real: a local Prefect server, a process work pool, `prefect deploy --all` from
prefect.yaml, a worker, and deployment runs whose output is checked (the second run skips every partition)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aidsafe.config import PROJECT_ROOT
from aidsafe.embedded import free_port
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI

PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on 127.0.0.1 with its own home; yields the environment pointing at it."""
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    port = url.split(":")[2].split("/")[0]
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not start in 120 s")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def prefect(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_deploy_schedule_and_run_through_a_worker(
    tmp_path: Path, prefect_server: dict[str, str], fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    env = prefect_server
    for p in range(2):
        write_partition(
            tmp_path / "in" / f"part-{p}.parquet", [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(2)]
        )
    prefect(env, "work-pool", "create", "aidsafe-process", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    listed = prefect(env, "deployment", "inspect", "run/aidsafe-nightly")
    assert "0 2 * * *" in listed and "Europe/Berlin" in listed  # the nightly schedule
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "aidsafe-process"],
        env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out = tmp_path / "out"
        options = {"base_url": server.base_url, "model": "m", "max_rounds": 1}
        params = json.dumps({"input": str(tmp_path / "in"), "output": str(out), "options": options})
        requests = []
        for _ in range(2):
            text = prefect(env, "deployment", "run", "run/aidsafe-nightly", "--params", params, "--watch",
                           "--watch-timeout", "240", timeout=300)  # fmt: skip
            assert "Completed" in text, text
            requests.append(len(server.requests))
        assert (out / "report" / "report.md").exists()
        generated = json.loads((out / "summary" / "generate.json").read_text())
        assert [p["status"] for p in generated["partitions"]] == ["skipped", "skipped"]
        assert requests[0] > 0 and requests[1] == requests[0]  # the second, incremental run had nothing to do
    finally:
        worker.terminate()
        worker.wait(timeout=30)
