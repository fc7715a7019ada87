"""Deployments for real: a local Prefect server, a process work pool, `prefect deploy --all` from
prefect.yaml, a worker, and deployment runs whose output is checked: the second run skips every partition, and
`prefect flow-run retry` on a failed run redoes only what failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from aidsafe.children import free_port
from aidsafe.config import PROJECT_ROOT, Options
from aidsafe.task_runners import check_distributable
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script

PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on 127.0.0.1 with its own home, the pool, `prefect deploy --all` and a
    worker; yields the environment pointing at the server."""
    url = f"http://127.0.0.1:{free_port()}/api"
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    port = url.split(":")[2].split("/")[0]
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = None
    try:
        wait_healthy(url)
        prefect(env, "work-pool", "create", "aidsafe-process", "--type", "process")
        prefect(env, "--no-prompt", "deploy", "--all")
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "aidsafe-process"],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        yield env
    finally:
        for process in (worker, server):
            if process:
                stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process (a worker with a flow run in flight, a server draining) has not
    exited in 30 s: teardown must not fail the module."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    pytest.fail("the Prefect server did not start in 120 s")


def prefect(env: dict[str, str], *args: str, timeout: float = 180, ok: bool = True) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def run_deployment(env: dict[str, str], params: dict[str, Any], ok: bool = True) -> str:
    """Trigger the nightly deployment with these parameters and wait for the end; returns the CLI output."""
    return prefect(env, "deployment", "run", "run/aidsafe-nightly", "--params", json.dumps(params), "--watch",
                   "--watch-timeout", "240", timeout=300, ok=ok)  # fmt: skip


def test_deploy_schedule_and_run_through_a_worker(
    tmp_path: Path, deployed: dict[str, str], fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    for p in range(2):
        write_partition(
            tmp_path / "in" / f"part-{p}.parquet", [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(2)]
        )
    listed = prefect(deployed, "deployment", "inspect", "run/aidsafe-nightly")
    assert "0 2 * * *" in listed and "Europe/Berlin" in listed  # the nightly schedule
    for runner in ("dask", "ray"):  # the distributed examples are deployed too, their schedules off
        listed = prefect(deployed, "deployment", "inspect", f"run/aidsafe-nightly-{runner}")
        assert f"'task_runner': '{runner}'" in listed and "'active': False" in listed, listed
    out = tmp_path / "out"
    options = {"base_url": server.base_url, "model": "m", "max_rounds": 1}
    requests = []
    for _ in range(2):
        text = run_deployment(
            deployed, {"input": str(tmp_path / "in"), "output": str(out), "options": options}
        )
        assert "Completed" in text, text
        requests.append(len(server.requests))
    assert (out / "report" / "report.md").exists()
    generated = json.loads((out / "summary" / "generate.json").read_text())
    assert [p["status"] for p in generated["partitions"]] == ["skipped", "skipped"]
    assert requests[0] > 0 and requests[1] == requests[0]  # the second, incremental run had nothing to do


def wait_final(env: dict[str, str], run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{run_id}", timeout=10).json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return dict(run)
        time.sleep(1)
    pytest.fail(f"flow run {run_id} did not finish in 240 s")


def test_prefect_flow_run_retry_redoes_only_what_failed(
    tmp_path: Path, deployed: dict[str, str], fake_openai: Callable[..., FakeOpenAI]
) -> None:
    """An outage fails a partition (so the flow run fails) and a bad reply fails a row of the other one;
    once the backend is fixed, `prefect flow-run retry` redoes those and nothing else."""
    backend = {"broken": True}

    def script(request: Request) -> Reply:
        if backend["broken"] and request.tool == "Draft" and "FRAGILE" in request.text:
            return Reply({"thoughts": [], "response": ""})  # invalid every time: the row fails
        return default_script(request)

    def outage(request: Request, number: int) -> str | None:
        return "503" if backend["broken"] and "LOCKED" in request.text else None

    server = fake_openai(script, faults=outage)
    write_partition(
        tmp_path / "in" / "a.parquet", [{"id": "a0", "prompt": "Solid?"}, {"id": "a1", "prompt": "FRAGILE?"}]
    )
    write_partition(
        tmp_path / "in" / "b.parquet", [{"id": "b0", "prompt": "LOCKED?"}, {"id": "b1", "prompt": "LOCKED!"}]
    )
    config = tmp_path / "aidsafe.toml"  # no waiting between reruns of a failed partition or HTTP retries
    config.write_text("partition_retries = 0\n[endpoint]\nmax_retries = 0\n")
    out = tmp_path / "out"
    options = {"base_url": server.base_url, "model": "m", "max_rounds": 1, "config": str(config)}
    text = run_deployment(
        deployed, {"input": str(tmp_path / "in"), "output": str(out), "options": options}, ok=False
    )
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", text).group(1)  # type: ignore[union-attr]
    assert wait_final(deployed, run_id)["state"]["type"] == "FAILED"
    first = {r["id"]: r for r in pq.read_table(out / "graded").to_pylist()}
    assert set(first) == {"a0"}
    backend["broken"] = False
    before = len(server.requests)
    assert "scheduled for retry" in prefect(deployed, "flow-run", "retry", run_id)
    run = wait_final(deployed, run_id)
    assert run["state"]["type"] == "COMPLETED" and run["run_count"] == 2, run["state"]
    redone = server.requests[before:]
    assert redone and all("FRAGILE" in r.text or "LOCKED" in r.text for r in redone)  # nothing for a0
    graded = {r["id"]: r for r in pq.read_table(out / "graded").to_pylist()}
    assert set(graded) == {"a0", "a1", "b0", "b1"}
    assert graded["a0"]["graded_at"] == first["a0"]["graded_at"]  # finished work untouched
    for stage in ("generate", "refine", "grade"):  # the redone rows left the failures tables
        assert pq.read_table(out / "failures" / stage).num_rows == 0, stage


@pytest.mark.parametrize("runner", ["dask", "ray"])
def test_distributed_deployment_example_is_a_valid_distributed_run(runner: str) -> None:
    """The example's options load as settings (no environment) and need no embedded model."""
    deployments = {
        d["name"]: d for d in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]
    }
    example, nightly = deployments[f"aidsafe-nightly-{runner}"], deployments["aidsafe-nightly"]
    assert example["entrypoint"] == nightly["entrypoint"]
    assert {k: v for k, v in example["parameters"].items() if k != "options"} == nightly["parameters"]
    settings = Options(**example["parameters"]["options"]).load(env={})
    assert settings.task_runner == runner and settings.scheduler_address and not settings.uses_embedded
    check_distributable(settings)
