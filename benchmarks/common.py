"""What the benchmark cases share: the test server process, input partitions, and measuring a case.

Every case runs in a process of its own (benchmarks.case), so that its CPU time and peak RSS are its own;
the test server and the Prefect API run in their own processes too, as a model server and Prefect would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TestServer:
    base_url: str

    def requests(self) -> int:
        """Chat requests answered so far."""
        return int(httpx.get(f"{self.base_url}/stats", timeout=10).json()["requests"])


@contextmanager
def test_server(latency: float) -> Iterator[TestServer]:
    """tests/openai_server.py in a process of its own, answering after `latency` seconds."""
    command = [sys.executable, "-m", "benchmarks.server", "--latency", str(latency)]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield TestServer(process.stdout.readline().strip())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def make_input(root: Path, rows: int, partitions: int) -> Path:
    """rows benign prompts in `partitions` Parquet files (id, prompt), as a user's prompt set."""
    root.mkdir(parents=True, exist_ok=True)
    per = -(-rows // partitions)
    for p in range(partitions):
        ids = range(p * per, min(rows, (p + 1) * per))
        prompts = [f"Explain in simple words how topic number {i} works, with one example." for i in ids]
        table = pa.table({"id": [f"row-{i}" for i in ids], "prompt": prompts})
        pq.write_table(table, root / f"part-{p:05d}.parquet")
    return root


@dataclass(frozen=True)
class Measured:
    """One case: wall and client CPU seconds, peak RSS of the case process, LLM calls the server answered."""

    case: str
    wall: float
    cpu: float
    peak_rss_mb: float
    calls: int
    rows: int

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall if self.wall else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall if self.wall else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu / self.calls if self.calls else 0.0


def measure(server: TestServer, case: str, rows: int, env: dict[str, str], **args: Any) -> Measured:
    """Run benchmarks.case in a new process; its last stdout line is its JSON result."""
    flags = [part for name, value in args.items() for part in (f"--{name.replace('_', '-')}", str(value))]
    command = [sys.executable, "-m", "benchmarks.case", case, "--url", server.base_url, *flags]
    before = server.requests()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(case, result["wall"], result["cpu"], result["peak_rss_mb"], server.requests() - before,
                    rows)  # fmt: skip
