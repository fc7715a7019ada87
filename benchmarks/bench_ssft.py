"""Benchmark: SSFT with the least-loss matching against the fixed assignment, on the CPU.

A tiny synthetic set export: N prompts (default 6) of sums, each with two traces of clearly different modes,
a numbered list of steps ("steps") and a one-line answer ("oneline"), in a shuffled order per prompt. Both
runs train the embedded SmolLM2-135M with the same seed and steps, each in a process of its own (so that
its peak RSS is its own); then the trained model's matching on the train prompts (aidsafe.ssft
.fork_usage_after, the same measure for both) gives the fork usage and the mode consistency: per forking
token, the share of its matches that are its most common mode (1.0: every token specialised on one mode).

    .venv/bin/python -m benchmarks.bench_ssft [--prompts 6] [--forks 2] [--steps 24] [--threads N]
        [--learning-rate 1e-4] [--assignments match,fixed]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

MODES = ("steps", "oneline")


def traces(a: int, b: int) -> list[dict[str, Any]]:
    c = a + b
    steps = {
        "cot": f"1. Read the numbers {a} and {b}.\n2. Add them together.\n3. The sum is {c}.",
        "response": f"The answer is {c}.",
        "configuration": "steps",
        "scores": {"policy": 5},
    }
    oneline = {
        "cot": f"{a} + {b} = {c}",
        "response": str(c),
        "configuration": "oneline",
        "scores": {"policy": 5},
    }
    return [steps, oneline]


def write_sets(directory: Path, prompts: int) -> Path:
    """train.jsonl: one row per prompt, its two traces in a random order (seeded)."""
    rng, lines = random.Random(0), []
    for i in range(prompts):
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        both = traces(a, b)
        rng.shuffle(both)
        row = {"id": f"sum-{i}", "prompt": f"What is {a} plus {b}?", "traces": both, "traces_count": 2,
               "diversity": None}  # fmt: skip
        lines.append(json.dumps(row) + "\n")
    directory.mkdir(parents=True)
    (directory / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    return directory


def consistency(matches: list[dict[str, Any]], tokens: list[str]) -> tuple[list[float | None], float]:
    """Per token, the share of its matches in its most common mode; and over all matches."""
    modes: dict[str, Counter[str]] = {t: Counter() for t in tokens}
    for prompt in matches:
        for token, _, mode in prompt["pairs"]:
            modes[token][mode] += 1
    per = [max(c.values()) / sum(c.values()) if c else None for c in modes.values()]
    total = sum(sum(c.values()) for c in modes.values())
    return per, sum(max(c.values()) for c in modes.values() if c) / total if total else 0.0


def one_run(assignment: str, data: Path, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one way and measure the trained model's matching (in this process)."""
    from aidsafe.config import load_settings
    from aidsafe.ssft import SsftSettings, fork_usage_after, train_ssft
    from aidsafe.train_run import cpu_threads

    settings = SsftSettings(forks=args.forks, assignment=assignment, max_steps=args.steps, batch_size=2,
                            learning_rate=args.learning_rate, max_length=128, device="cpu",
                            threads=args.threads)  # fmt: skip
    train_ssft(data, output, settings=settings, cache_dir=load_settings().cache_dir, report=lambda _: None)
    record = json.loads((output / "training.json").read_text())
    with cpu_threads(args.threads):
        usage = fork_usage_after(output, data, max_length=128, threads=args.threads)
    per, overall = consistency(usage.matches, usage.tokens)
    return {
        "record": record,
        "usage": usage.usage,
        "share": usage.share,
        "per_token": per,
        "overall": overall,
    }


def _child(queue: Any, *args: Any) -> None:
    queue.put(one_run(*args))


def isolated(assignment: str, data: Path, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, assignment, data, output, args))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    return result


def line(name: str, m: dict[str, Any]) -> str:
    r = m["record"]
    per = ", ".join("-" if v is None else f"{v:.2f}" for v in m["per_token"])
    return (f"| {name} | {r['train_seconds'] / r['steps']:.2f} | {r['peak_rss_bytes'] / 2**20:.0f} | "
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['fork_usage']} | {m['usage']} "
            f"(top {m['share']:.2f}) | {per} | {m['overall']:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--forks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--assignments", default="match,fixed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidsafe-bench-ssft-") as tmp:
        data, load = write_sets(Path(tmp) / "sets", args.prompts), os.getloadavg()[0]
        results = {a: isolated(a, data, Path(tmp) / a, args) for a in args.assignments.split(",")}
    print(
        f"context: {args.prompts} prompts x 2 traces ({'/'.join(MODES)}, shuffled), K={args.forks} forks, "
        f"{args.steps} steps of 2 prompts, lr {args.learning_rate:g}, full fine-tuning, fp32, SmolLM2-135M, "
        f"{args.threads or os.cpu_count()} torch thread(s) on {os.cpu_count()} CPU(s), load average "
        f"{load:.1f} at start\n"
    )
    print(
        "| assignment | s/step | peak RSS MiB | loss first -> last | usage in training | usage after "
        "(matching) | mode consistency per token | overall |"
    )
    print("|---|---:|---:|---|---|---|---|---:|")
    for name, measured in results.items():
        print(line(name, measured))


if __name__ == "__main__":
    main()
