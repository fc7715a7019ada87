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


def start(source: Path, out: Path, server: FakeOpenAI) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "OPENAI_BASE_URL": server.base_url,
           "AIDSAFE_MODEL": "m", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    command = [sys.executable, "-m", "aidsafe.cli", "generate", "--input", str(source), "--output", str(out),
               "--concurrency", "2", "--max-rounds", "1"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finished(out: Path) -> dict[str, float]:
    """Output partitions that count as done, with their modification times."""
    directory = out / "generated"
    done = {p.name: p.stat().st_mtime for p in directory.glob("*.parquet")} if directory.is_dir() else {}
    for name in done:  # every visible partition is complete and marked
        assert stored_fingerprint(directory / name), name
    return done


def test_kill_at_random_moments_then_rerun(tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(latency=0.15)
    source, out = tmp_path / "in", tmp_path / "out"
    for p in range(PARTITIONS):
        write_partition(
            source / f"part-{p}.parquet", [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(ROWS)]
        )
    draw = random.Random(11)
    before_last_kill: dict[str, float] = {}
    for _ in range(3):
        process = start(source, out, server)
        time.sleep(draw.uniform(4.0, 9.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        before_last_kill = finished(out)
    assert len(before_last_kill) < PARTITIONS, "the kills came too late to interrupt the run"
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
    redone = PARTITIONS - len(before_last_kill)
    assert len(server.requests) - requests_before == redone * ROWS * 3
