"""The benchmark suite: aidsafe's client against the raw openai client on the project's test server.

    .venv/bin/python -m benchmarks [--rows 2000] [--partitions 100] [--latency 0.05] [--concurrency 64]
                                   [--scale 10000,100000 | --scale none]

In one run, against tests/openai_server.py in its own process (answering tool calls after `latency`
seconds) and a Prefect API of its own: the raw openai AsyncClient, `generate` and the whole `run` (generate,
refine, grade, baseline, report) over `rows` prompts in `partitions` files, the rerun of that finished run,
and the scale runs (generate, one agent turn per row, 1,000 rows per partition). Prints one table: LLM
calls/s and their ratio to the raw client's (the figure that travels between machines), rows/s, client CPU
ms per call, peak RSS of the client process, and wall seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path

from aidsafe.prefect_server import prefect_api
from benchmarks.common import Measured, TestServer, make_input, measure, test_server

SCALE_SETTINGS = {"agents": 1, "max_rounds": 1}  # 3 LLM calls per row: intents, draft, one verdict


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="prompts of the generate and run cases")
    parser.add_argument("--partitions", type=int, default=100, help="partition files of those prompts")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the test server takes per call")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--scale", default="10000,100000", help="row counts of the scale runs, or none")
    parser.add_argument("--cases", default="raw,generate,run,rerun", help="which of the main cases to run")
    return parser.parse_args()


def _scale(server: TestServer, env: dict[str, str], work: Path, rows: int, concurrency: int) -> Measured:
    source = make_input(work / f"scale-{rows}", rows, max(1, rows // 1000))
    settings = json.dumps(SCALE_SETTINGS)
    result = measure(server, "generate", rows, env, input=source, output=work / f"scale-{rows}-out",
                     concurrency=concurrency, settings=settings)  # fmt: skip
    return dataclasses.replace(result, case=f"scale {rows:,} (generate)")


def _main_cases(
    args: argparse.Namespace, server: TestServer, env: dict[str, str], work: Path
) -> list[Measured]:
    source = make_input(work / "input", args.rows, args.partitions)
    common = {"input": source, "concurrency": args.concurrency}
    wanted = args.cases.split(",")
    results = []
    if "raw" in wanted:
        results.append(measure(server, "raw", 0, env, calls=4 * args.rows, concurrency=args.concurrency))
    if "generate" in wanted:
        results.append(measure(server, "generate", args.rows, env, output=work / "generate", **common))
    if "run" in wanted or "rerun" in wanted:
        results.append(measure(server, "run", args.rows, env, output=work / "run", **common))
    if "rerun" in wanted:
        results.append(measure(server, "rerun", args.rows, env, output=work / "run", **common))
    return results


def _table(results: list[Measured], args: argparse.Namespace) -> str:
    raw = next((r for r in results if r.case == "raw"), None)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()}; test server latency {args.latency * 1000:.0f} ms, "
        f"{args.concurrency} in flight",
        "",
        "| case | LLM calls | calls/s | x raw openai | rows/s | client CPU ms/call | peak RSS MB | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.calls_per_s / raw.calls_per_s:.2f}" if raw and r.calls else "-"
        rows = f"{r.rows_per_s:.1f}" if r.rows else "-"
        cells = [r.case, str(r.calls), f"{r.calls_per_s:.1f}", ratio, rows, f"{r.cpu_ms_per_call:.2f}",
                 f"{r.peak_rss_mb:.0f}", f"{r.wall:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = _args()
    scales = [] if args.scale == "none" else [int(n) for n in args.scale.split(",")]
    with tempfile.TemporaryDirectory(prefix="aidsafe-bench-") as tmp, test_server(args.latency) as server:
        work = Path(tmp)
        with prefect_api(work / "prefect.log") as api_url:
            env = {**os.environ, "PREFECT_API_URL": str(api_url)}
            results = _main_cases(args, server, env, work)
            results += [_scale(server, env, work, rows, args.concurrency) for rows in scales]
    print(_table(results, args))


if __name__ == "__main__":
    main()
