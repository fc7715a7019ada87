"""The `aidsafe` console command: the only place where domain errors become user messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aidsafe.errors import AidsafeError

GENERATE_HELP = """\
Run AIDSAFE stages 1-3 (intent decomposition, first draft, multi-agent deliberation) over every Parquet
partition of INPUT and write one output partition each under OUTPUT/generated/, rows that failed under
OUTPUT/failures/, and OUTPUT/summary.json. Rerunning skips partitions whose input content, policies,
prompts and settings are unchanged.

Endpoints: with nothing configured every role runs on the embedded SmolLM2-135M model (a local llama.cpp
server started for the run). OPENAI_BASE_URL, OPENAI_API_KEY and AIDSAFE_MODEL set the endpoint of every
role the config file does not set; --base-url/--model override both. API keys are read only from the
environment (see api_key_env in the config file), never from the command line.
"""


def _generate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="deliberate CoT + response for every prompt",
        description=GENERATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="Parquet file, directory of partitions, or glob")
    p.add_argument("--output", required=True, help="output directory (created if missing)")
    p.add_argument("--config", help="TOML config file (roles, endpoints, budget); see README")
    p.add_argument("--policies", help="policy directory (default: policies/default)")
    p.add_argument("--concurrency", type=int, help="rows in flight per partition (default 4)")
    p.add_argument("--max-rounds", type=int, help="deliberation budget in agent turns (default 4)")
    p.add_argument("--agents", type=int, help="number of deliberation agents taking turns (default 2)")
    p.add_argument("--base-url", help="OpenAI-compatible base URL for every role (overrides config and env)")
    p.add_argument("--model", help="model name for every role (with --base-url or OPENAI_BASE_URL)")
    p.add_argument("--max-tokens", type=int, help="completion token limit per call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidsafe", description="Policy-embedded CoT safety data (AIDSAFE).")
    sub = parser.add_subparsers(dest="command", required=True)
    _generate_parser(sub)
    return parser


def _run_generate(args: argparse.Namespace) -> int:
    from flows.generate import generate  # imported late: Prefect is slow to import

    summary = generate(
        input=args.input, output=args.output, config=args.config, policies=args.policies,
        concurrency=args.concurrency, max_rounds=args.max_rounds, agents=args.agents,
        base_url=args.base_url, model=args.model, max_tokens=args.max_tokens,
    )  # fmt: skip
    print(summary.describe())
    print(f"output:   {summary.output_dir}/generated/")
    print(f"failures: {summary.output_dir}/failures/")
    print(f"summary:  {summary.summary_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_generate(args)
    except AidsafeError as exc:
        print(f"aidsafe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
