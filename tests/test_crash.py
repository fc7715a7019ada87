"""Crash safety: SIGKILL a real run at several moments, rerun: nothing lost, duplicated or recomputed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL

from aidsafe.partitions import stored_fingerprint
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI

pytestmark = pytest.mark.usefixtures("prefect_api")
PARTITIONS, ROWS = 6, 4


def start(
    source: Path, out: Path, server: FakeOpenAI, step: str = "generate", workers: int = 4
) -> subprocess.Popen[bytes]:
    """A real `aidsafe STEP` in its own process, against the test server, `workers` partitions at a time."""
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "OPENAI_BASE_URL": server.base_url,
           "AIDSAFE_MODEL": "m", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    command = [sys.executable, "-m", "aidsafe.cli", step, "--input", str(source), "--output", str(out),
               "--concurrency", "2", "--max-rounds", "1", "--workers", str(workers)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finished(out: Path) -> dict[str, float]:
    """Output partitions that count as done, with their modification times."""
    directory = out / "generated"
    done = {p.name: p.stat().st_mtime for p in directory.glob("*.parquet")} if directory.is_dir() else {}
    for name in done:  # every visible partition is complete and marked
        assert stored_fingerprint(directory / name), name
    return done


def wait_for(process: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def kill_after(process: subprocess.Popen[bytes], server: FakeOpenAI, calls: int) -> None:
    """SIGKILL the run once it has made `calls` more model calls: a moment measured in progress."""
    target = len(server.requests) + calls
    wait_for(process, lambda: len(server.requests) >= target)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_kill_at_random_moments_then_rerun(tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]) -> None:
    """A partition costs ROWS * 3 = 12 calls; the flow runs 4 partitions at a time."""
    server = fake_openai(latency=0.15)
    source, out = tmp_path / "in", tmp_path / "out"
    for p in range(PARTITIONS):
        write_partition(
            source / f"part-{p}.parquet", [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(ROWS)]
        )
    draw = random.Random(11)
    kill_after(start(source, out, server), server, draw.randint(1, 20))  # mid-partition, before any is done
    assert not finished(out)
    process = start(source, out, server)  # soon after the first partitions are done, before the last ones
    wait_for(process, lambda: bool(finished(out)))
    kill_after(process, server, draw.randint(0, 5))
    kill_after(start(source, out, server), server, draw.randint(1, 10))  # again mid-partition, in the rerun
    before_last_kill = finished(out)
    assert 0 < len(before_last_kill) < PARTITIONS, sorted(before_last_kill)
    requests_before = len(server.requests)
    final = start(source, out, server)
    assert final.wait(timeout=300) == 0
    after = finished(out)
    assert len(after) == PARTITIONS
    for name, mtime in before_last_kill.items():  # finished partitions were skipped, not recomputed
        assert after[name] == mtime, name
    ids = pq.read_table(out / "generated").column("id").to_pylist()
    assert sorted(ids) == sorted(
        f"p{p}-{i}" for p in range(PARTITIONS) for i in range(ROWS)
    )  # none lost or doubled
    assert not list(out.rglob("*.tmp"))  # temp files of killed writes were cleaned up by the rewrites
    redone = PARTITIONS - len(before_last_kill)
    assert len(server.requests) - requests_before == redone * ROWS * 3
