"""Benchmark: time and peak memory of `aidsafe train sft` on the CPU, for an export of N rows (default 100).

Writes a synthetic SFT export of rows about as long as the pipeline's (a prompt, a CoT of several thoughts
in <think>...</think>, a response), makes sure the embedded model is converted (not timed), then runs the real
command `aidsafe train sft` (its temporary Prefect API included) on the embedded SmolLM2-135M and prints the
wall time, the training time and the peak RSS, with the context needed to compare runs.

    .venv/bin/python benchmarks/bench_train.py [--rows 100] [--batch-size 4] [--threads N] [--full]
        [--checkpointing]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the user asks about a policy that covers harm privacy and safety so answer should explain what "
    "is allowed give safe context avoid details enable misuse offer helpful alternative"
)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS.split()) for _ in range(words)).capitalize() + "."


def row(i: int, rng: random.Random) -> dict[str, object]:
    """About the size of a kept row: a 20-word prompt, 6 thoughts of 25 words, a 90-word response."""
    thoughts = "\n".join(sentence(rng, 25) for _ in range(6))
    response = " ".join(sentence(rng, 15) for _ in range(6))
    return {"id": f"bench-{i}", "messages": [
        {"role": "user", "content": sentence(rng, 20).rstrip(".") + "?"},
        {"role": "assistant", "content": f"<think>\n{thoughts}\n</think>\n\n{response}"},
    ]}  # fmt: skip


def write_export(directory: Path, rows: int) -> Path:
    rng = random.Random(0)
    directory.mkdir(parents=True)
    lines = (json.dumps(row(i, rng)) + "\n" for i in range(rows))
    (directory / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    return directory


def mean_tokens(export: Path, checkpoint: Path) -> float:
    """Tokens per row as the trainer sees them (chat template applied)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = [json.loads(line) for line in (export / "train.jsonl").read_text().splitlines()]
    counts = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in rows
    ]
    return sum(counts) / len(counts)


def embedded_checkpoint() -> Path:
    """The converted embedded model in the settings' cache (converted now if needed, in this process)."""
    from aidsafe.config import load_settings
    from aidsafe.embedded import locate_model
    from aidsafe.hf import embedded_checkpoint as convert

    return convert(load_settings().cache_dir, locate_model())


def command(export: Path, output: Path, args: argparse.Namespace, cache: Path) -> list[str]:
    aidsafe = Path(sys.executable).with_name("aidsafe")
    cmd = [str(aidsafe), "train", "sft", "--data", str(export), "--output", str(output), "--device", "cpu",
           "--batch-size", str(args.batch_size), "--cache-dir", str(cache)]  # fmt: skip
    cmd += ["--threads", str(args.threads)] if args.threads else []
    return cmd + (["--full"] if args.full else []) + (["--checkpointing"] if args.checkpointing else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--checkpointing", action="store_true", help="recompute activations (less memory)")
    args = parser.parse_args()
    checkpoint = embedded_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        export, output = write_export(Path(tmp) / "export", args.rows), Path(tmp) / "model"
        tokens, load = mean_tokens(export, checkpoint), os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(
            command(export, output, args, checkpoint.parent.parent), check=True, capture_output=True
        )
        wall = time.perf_counter() - start
        record = json.loads((output / "training.json").read_text())
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    method = ("full" if args.full else "LoRA r16") + (
        ", activation checkpointing" if args.checkpointing else ""
    )
    threads = args.threads or os.cpu_count()
    print(f"context: {args.rows} rows x {tokens:.0f} tokens, 1 epoch, batch {args.batch_size} = "
          f"{record['steps']} steps, {method}, fp32, SmolLM2-135M, {threads} torch thread(s) on "
          f"{os.cpu_count()} CPU(s), load average {load:.1f} at start")  # fmt: skip
    print(f"wall seconds (whole command): {wall:.1f}")
    seconds = record["train_seconds"]
    print(f"training seconds: {seconds:.1f} ({seconds / record['steps']:.2f} per step)")
    print(f"peak RSS MiB (aidsafe process): {record['peak_rss_bytes'] / 2**20:.0f}")
    print(f"peak RSS MiB (largest child, incl. the Prefect API): {children_peak:.0f}")
    print(f"loss: {record['first_loss']:.4f} -> {record['last_loss']:.4f}")


if __name__ == "__main__":
    main()
