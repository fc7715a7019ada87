"""One benchmark case in a process of its own; prints its wall and CPU seconds and peak RSS as JSON.

    .venv/bin/python -m benchmarks.case raw|generate|run|rerun --url URL [--input DIR --output DIR] ...

raw: the plain openai AsyncClient sending `calls` forced tool calls (the drafter's tool and the policies as
system prompt, as the pipeline sends them) at `concurrency`, parsing each reply's arguments. generate and
run: the aidsafe flows on the input (the Prefect API given by PREFECT_API_URL is already running); rerun is
run on an output directory that is finished already. Only the work is timed, not imports or set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Callable
from typing import Any

import openai

from aidsafe.config import DEFAULT_POLICIES, DEFAULT_PROMPTS, Options
from aidsafe.policies import load_policies
from aidsafe.prompts import load_prompts
from graphs.schemas import Draft

MODEL = "bench-model"


async def _raw(url: str, calls: int, concurrency: int) -> None:
    policies = load_policies(DEFAULT_POLICIES)
    tool: Any = load_prompts(DEFAULT_PROMPTS, policies.render()).tool(Draft)
    choice: Any = {"type": "function", "function": {"name": "Draft"}}
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as client:

        async def one(i: int) -> None:
            messages: Any = [{"role": "system", "content": policies.render()},
                             {"role": "user", "content": f"Explain how topic number {i} works."}]  # fmt: skip
            async with gate:
                reply = await client.chat.completions.create(
                    model=MODEL, messages=messages, tools=[tool], tool_choice=choice, max_tokens=512
                )
            json.loads(reply.choices[0].message.tool_calls[0].function.arguments)  # type: ignore[index,union-attr]

        await asyncio.gather(*(one(i) for i in range(calls)))


def _options(url: str, concurrency: int, extra: dict[str, Any]) -> Options:
    """The endpoint at `concurrency` requests in flight (also on a checkout from before max_in_flight)."""
    values: dict[str, Any] = {"base_url": url, "model": MODEL, **extra}
    if "max_in_flight" in Options.model_fields:
        values["max_in_flight"] = concurrency
    else:  # before issue 12: rows in flight per partition, 4 partitions at once
        values["concurrency"] = max(1, concurrency // 4)
    return Options(**values)


def _work(args: argparse.Namespace) -> Callable[[], object]:
    extra = json.loads(args.settings)
    if args.case == "raw":
        return lambda: asyncio.run(_raw(args.url, args.calls, args.concurrency))
    options = _options(args.url, args.concurrency, extra)
    if args.case == "generate":
        from flows.stages import FLOWS

        return lambda: FLOWS["generate"](input=args.input, output=args.output, options=options)
    from flows.run import run

    return lambda: run(args.input, args.output, options, baseline=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["raw", "generate", "run", "rerun"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--settings", default="{}", help="more Options, as JSON")
    args = parser.parse_args()
    work = _work(args)
    cpu = time.process_time()
    started = time.perf_counter()
    work()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": round(wall, 3), "cpu": round(cpu, 3), "peak_rss_mb": round(peak, 1)}))


if __name__ == "__main__":
    main()
