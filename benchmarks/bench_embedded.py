"""Benchmark: the cost of a row on the embedded model, and what the shared policy prefix saves.

Runs the deliberation graph (no Prefect) over the first N prompts of a partition, one row at a time, on the
embedded llama.cpp server, and prints per-stage latency and tokens, LLM calls per row, and the latency of the
first call (cold cache) against later calls that share the policy prefix.

    .venv/bin/python benchmarks/bench_embedded.py [--rows 4] [--input data/sample]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from aidsafe.calls import RowCalls
from aidsafe.config import load_settings
from aidsafe.embedded import embedded_server
from aidsafe.llm_io import Connections
from aidsafe.models import Check, Messages, StructuredCaller, T, build_roles
from aidsafe.policies import load_policies
from aidsafe.prompts import load_prompts
from aidsafe.stages.generate import deliberation_context
from aidsafe.usage import Usage
from graphs.graph import graph

Timing = tuple[str, float, int, int]  # role, seconds, input tokens, output tokens


class Timed:
    """Wraps a StructuredCaller and records the latency and tokens of every call."""

    def __init__(self, inner: StructuredCaller, log: list[Timing]) -> None:
        self.role, self.model_name, self._inner, self._log = inner.role, inner.model_name, inner, log

    async def call(
        self, schema: type[T], messages: Messages, check: Check[T] | None = None
    ) -> tuple[T, Usage]:
        started = time.perf_counter()
        result, usage = await self._inner.call(schema, messages, check)
        self._log.append(
            (self.role, time.perf_counter() - started, usage["input_tokens"], usage["output_tokens"])
        )
        return result, usage

    async def text(self, messages: Messages, fork: str | None = None) -> tuple[str, Usage]:
        return await self._inner.text(messages, fork)


async def bench(url: str, prompts_text: list[str], max_rounds: int) -> list[Timing]:
    settings = load_settings(overrides={"max_rounds": max_rounds}, env={}).with_embedded_url(url)
    policies = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policies.render())
    log: list[Timing] = []
    async with Connections() as connections:
        models = {role: Timed(m, log) for role, m in build_roles(settings, connections, prompts).items()}
        for text in prompts_text:
            context = deliberation_context(RowCalls(models, prompts), settings, prompts)
            await graph.ainvoke(
                {"prompt": text}, context=context, config={"recursion_limit": context.recursion_limit}
            )
    return log


def report(log: list[Timing], rows: int) -> None:
    by_role: dict[str, list[Timing]] = defaultdict(list)
    for entry in log:
        by_role[entry[0].rstrip("0123456789") or entry[0]].append(entry)
    print(f"rows: {rows}, LLM calls: {len(log)} ({len(log) / rows:.1f} per row)")
    print(f"{'role':10} {'calls':>5} {'mean s':>7} {'in tok':>7} {'out tok':>7}")
    for role, entries in by_role.items():
        seconds = statistics.mean(e[1] for e in entries)
        tokens_in, tokens_out = (statistics.mean(float(e[i]) for e in entries) for i in (2, 3))
        print(f"{role:10} {len(entries):5d} {seconds:7.2f} {tokens_in:7.0f} {tokens_out:7.0f}")
    warm = [e[1] for e in log[1:]]
    print(
        f"first call (cold prefix cache): {log[0][1]:.2f} s; later calls: mean {statistics.mean(warm):.2f} s"
    )
    print(f"per row: {sum(e[1] for e in log) / rows:.1f} s, {sum(e[2] for e in log) / rows:.0f} input + "
          f"{sum(e[3] for e in log) / rows:.0f} output tokens")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", default="data/sample/xstest-sample.parquet")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--max-rounds", type=int, default=4)
    args = parser.parse_args()
    texts = pq.read_table(args.input, columns=["prompt"]).column("prompt").to_pylist()[: args.rows]
    settings = load_settings(env={})
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_server(settings.embedded, Path(tmp) / "server.log") as url,
    ):
        log = asyncio.run(bench(url, texts, args.max_rounds))
    report(log, len(texts))


if __name__ == "__main__":
    main()
