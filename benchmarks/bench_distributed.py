"""Benchmark: LLM calls per second of the generate stage with 1 and 2 local worker processes, per task runner.

Runs the real generate flow (Prefect, one task per partition, a temporary Prefect API as the CLI starts it)
over N rows in P partitions against the project's test server (tests/openai_server.py, scripted replies after
`latency` seconds) running in a process of its own, once per task runner and worker count: threads (this
process, for reference), dask and ray (a local cluster of that many worker processes started by the stage,
as with scheduler_address unset). Prints the wall time (cluster start and worker imports included), the
calls per second over the wall time, and over the span from the first to the last model request (the
cluster at work), the machine's CPU use over the case and the test server's CPU seconds (on a small machine
the server, the Prefect API and the workers share the cores).

    .venv/bin/python benchmarks/bench_distributed.py [--rows 400] [--partitions 8] [--latency 0.05]
        [--runners threads,dask,ray] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import psutil  # with the distributed extra (a dependency of distributed and ray)
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from aidsafe.config import Options
from aidsafe.prefect_server import prefect_api
from tests.openai_server import FakeOpenAI, Reply, Request, default_script


def serve(latency: float, conn: Connection) -> None:
    """The test server process: sends its base URL, then on "take" (count, first, last) of the requests
    since the last take and its own CPU seconds."""
    stamps: list[float] = []
    cpu = time.process_time()

    def script(request: Request) -> Reply:
        stamps.append(time.monotonic())  # CLOCK_MONOTONIC: comparable across the processes of one machine
        return default_script(request)

    with FakeOpenAI(script, latency) as server:
        conn.send(server.base_url)
        while conn.recv() == "take":
            taken = sorted(stamps)
            stamps.clear()
            server.requests.clear()
            used, cpu = time.process_time() - cpu, time.process_time()
            conn.send((len(taken), taken[0] if taken else 0.0, taken[-1] if taken else 0.0, used))


def make_input(root: Path, rows: int, partitions: int) -> Path:
    per = -(-rows // partitions)
    for p in range(partitions):
        ids = range(p * per, min(rows, (p + 1) * per))
        prompts = [f"Explain in simple words how topic number {i} works, with one example." for i in ids]
        root.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [f"row-{i}" for i in ids], "prompt": prompts}), root / f"p{p}.parquet")
    return root


@dataclass(frozen=True)
class Case:
    runner: str
    workers: int
    wall: float
    calls: int
    span: float  # seconds from the first to the last model request
    busy: float  # the machine's CPU use over the case, percent of all cores
    server_cpu: float  # CPU seconds of the test server

    def line(self) -> str:
        per_wall = self.calls / self.wall if self.wall else 0.0
        per_span = self.calls / self.span if self.span else 0.0
        counts = f"{self.runner:8} {self.workers:7d} {self.calls:6d} {self.wall:7.1f}"
        return f"{counts} {per_wall:9.1f} {per_span:9.1f} {self.busy:6.0f} {self.server_cpu:8.1f}"


def run_case(conn: Connection, base_url: str, source: Path, out: Path, runner: str, workers: int) -> Case:
    from flows.stages import FLOWS

    options = Options(base_url=base_url, model="bench-model", task_runner=runner, workers=workers)
    psutil.cpu_percent()  # from now
    started = time.monotonic()
    summary = FLOWS["generate"](input=str(source), output=str(out), options=options)
    wall = time.monotonic() - started
    busy = psutil.cpu_percent()
    conn.send("take")
    calls, first, last, server_cpu = conn.recv()
    assert summary.rows_failed == 0 and calls == summary.llm_calls, (summary.rows_failed, calls)
    return Case(runner, workers, wall, calls, last - first, busy, server_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runners", default="threads,dask,ray")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(args.latency, theirs))
    server.start()
    base_url = ours.recv()
    print(f"rows: {args.rows} in {args.partitions} partitions, latency {args.latency * 1000:.0f} ms, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'runner':8} {'workers':>7} {'calls':>6} {'wall s':>7} {'calls/s':>9} {'at work':>9} "
          f"{'cpu %':>6} {'server s':>8}")  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect.log"):
            source = make_input(Path(tmp) / "in", args.rows, args.partitions)
            for runner in args.runners.split(","):
                for workers in (int(w) for w in args.workers.split(",")):
                    out = Path(tmp) / f"out-{runner}-{workers}"
                    print(run_case(ours, base_url, source, out, runner, workers).line(), flush=True)
    finally:
        ours.send("stop")
        server.join(timeout=30)


if __name__ == "__main__":
    main()
