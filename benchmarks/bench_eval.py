"""Benchmark: what `aidsafe eval` costs per 100 prompts, against answering the same prompts directly.

For each target kind (the embedded llama.cpp server, and the embedded model in process through transformers,
`hf:embedded`) it answers the first N prompts of the evaluation sets twice in the same run: raw (one call
after another: the openai client to the server, or aidsafe.local_model.generate) and through the eval flow
(Prefect, one task per set, partition files, the refusal detector), with the judge on the project's test
server (scripted, no latency) so that the target's time is what is measured. Prints seconds, the ratio
flow / raw, seconds per 100 prompts and the peak RSS of this process (children apart) and of the children.

    .venv/bin/python benchmarks/bench_eval.py [--per-set 5] [--max-tokens 64] [--kinds embedded,hf]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import openai
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aidsafe.config import EMBEDDED_MODEL_NAME, Options, load_settings
from aidsafe.embedded import embedded_server
from aidsafe.evaluation import DEFAULT_SETS, prepare_sets
from aidsafe.local_model import generate
from aidsafe.prefect_server import prefect_api
from aidsafe.targets import Target, checkpoint_path
from tests.openai_server import FakeOpenAI, Reply, Request


def judge(request: Request) -> Reply:
    return Reply({"compliance": "refusal", "harmful": False, "reason": "Scripted verdict."})


def prompts_of(sets: Path) -> list[str]:
    return [p for path in sorted(sets.glob("*.parquet")) for p in pq.read_table(path)["prompt"].to_pylist()]


def raw_embedded(prompts: list[str], max_tokens: int, log: Path) -> float:
    with embedded_server(load_settings(env={}).embedded, log) as url:
        client = openai.OpenAI(base_url=url, api_key="x")
        started = time.perf_counter()
        for prompt in prompts:
            client.chat.completions.create(model=EMBEDDED_MODEL_NAME, max_tokens=max_tokens, temperature=0,
                                           messages=[{"role": "user", "content": prompt}])  # fmt: skip
        return time.perf_counter() - started


def raw_hf(prompts: list[str], max_tokens: int) -> float:
    path = checkpoint_path(Target("base", "hf:embedded"), load_settings(env={}))
    generate(path, [("human", "warm up")], 4, 0.0)  # loading is not what is measured
    started = time.perf_counter()
    for prompt in prompts:
        generate(path, [("human", prompt)], max_tokens, 0.0)
    return time.perf_counter() - started


def through_flow(spec: str, sets: Path, out: Path, judge_url: str, max_tokens: int) -> float:
    from flows.evaluate import evaluate

    options = Options(base_url=judge_url, model="judge", max_tokens=max_tokens, concurrency=1)
    started = time.perf_counter()
    evaluate(str(out), [f"t={spec}"], str(sets), options)
    return time.perf_counter() - started


def peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-set", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--kinds", default="embedded,hf")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    sets = prepare_sets(DEFAULT_SETS, work / "input", args.per_set)
    prompts = prompts_of(sets)
    print(f"{len(prompts)} prompts ({args.per_set} per set), max_tokens {args.max_tokens}")
    print(f"{'target':<10}{'raw s':>9}{'flow s':>9}{'flow/raw':>10}{'flow s/100':>12}")
    with FakeOpenAI(judge) as server, prefect_api(work / "prefect.log"):
        for kind in args.kinds.split(","):
            if kind == "embedded":
                raw = raw_embedded(prompts, args.max_tokens, work / "server.log")
            else:
                raw = raw_hf(prompts, args.max_tokens)
            spec = "embedded" if kind == "embedded" else "hf:embedded"
            flow = through_flow(spec, sets, work / f"out-{kind}", server.base_url, args.max_tokens)
            per_100 = 100 * flow / len(prompts)
            print(f"{kind:<10}{raw:>9.1f}{flow:>9.1f}{flow / raw:>10.2f}{per_100:>12.0f}")
    print(f"peak RSS: this process {peak_mb(resource.RUSAGE_SELF):.0f} MB, "
          f"children {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
