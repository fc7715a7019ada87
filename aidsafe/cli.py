"""The `aidsafe` console command: the only place where domain errors become user messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aidsafe.errors import AidsafeError

DESCRIPTION = """\
aidsafe makes policy-embedded chain-of-thought safety data (AIDSAFE). Stages, each a Prefect flow with
one task per Parquet partition: generate (intents, first draft, multi-agent deliberation) -> refine ->
grade, plus the zero-shot baseline (LLM_ZS) and the report; `run` does them all. Each stage writes
OUTPUT/<stage dir>/ (one partition per input partition), OUTPUT/failures/<stage>/ and
OUTPUT/summary/<stage>.json; a rerun skips partitions whose input content, policies, prompts and
settings are unchanged.
"""
ENDPOINTS = """\
Endpoints: with nothing configured every role runs on the embedded SmolLM2-135M model (a local llama.cpp
server started for the run). OPENAI_BASE_URL, OPENAI_API_KEY and AIDSAFE_MODEL set the endpoint of every
role the config file does not set; --base-url/--model override both. API keys are read only from the
environment (see api_key_env in the config file), never from the command line.
"""


def _settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (roles, endpoints, budget); see README")
    p.add_argument("--policies", type=Path, help="policy directory (default: policies/default)")
    p.add_argument("--concurrency", type=int, help="rows in flight per partition (default 4)")
    p.add_argument("--max-rounds", type=int, help="deliberation budget in agent turns (default 4)")
    p.add_argument("--agents", type=int, help="number of deliberation agents taking turns (default 2)")
    p.add_argument("--base-url", help="OpenAI-compatible base URL for every role (overrides config and env)")
    p.add_argument("--model", help="model name for every role (with --base-url or OPENAI_BASE_URL)")
    p.add_argument("--max-tokens", type=int, help="completion token limit per call")


def _thresholds(p: argparse.ArgumentParser) -> None:
    text = "keep only rows scoring at least N on METRIC (repeatable), e.g. faithfulness_policy_cot=4"
    p.add_argument("--min-score", action="append", default=[], metavar="METRIC=N", help=text)


def _add(sub: Any, name: str, help: str, *, input: bool, settings: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, epilog=ENDPOINTS if settings else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    if input:
        p.add_argument("--input", required=True, help="Parquet file, directory of partitions, or glob")
    p.add_argument("--output", required=True, help="output directory (created if missing)")
    if settings:
        _settings_options(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aidsafe",
        description=DESCRIPTION,
        epilog=ENDPOINTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = _add(sub, "run", "the whole job: generate, refine, grade (+ baseline), report", input=True)
    run.add_argument(
        "--baseline", action="store_true", help="also run the zero-shot baseline (LLM_ZS) to compare"
    )
    _thresholds(run)
    _add(sub, "generate", "intents, first draft and deliberation for every prompt", input=True)
    _add(sub, "refine", "refine the generated CoTs (OUTPUT/generated -> OUTPUT/refined)", input=False)
    _add(sub, "grade", "grade the refined rows 1-5 (OUTPUT/refined -> OUTPUT/graded)", input=False)
    _add(sub, "baseline", "zero-shot baseline (LLM_ZS), graded by the same grader", input=True)
    _thresholds(
        _add(sub, "report", "the report: AIDSAFE vs baseline, and the kept rows", input=False, settings=False)
    )
    return parser


def parse_thresholds(items: list[str]) -> dict[str, int]:
    thresholds = {}
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise AidsafeError(f"--min-score {item!r}: expected METRIC=N, e.g. faithfulness_policy_cot=4")
        thresholds[metric.strip()] = int(value)
    return thresholds


def _options(args: argparse.Namespace) -> Any:
    from aidsafe.config import Options

    names = ("config", "policies", "concurrency", "max_rounds", "agents", "base_url", "model", "max_tokens")
    return Options(**{n: getattr(args, n) for n in names})


def _dispatch(args: argparse.Namespace) -> Callable[[], Any]:
    """The flow call for a command (flows are imported late: Prefect is slow to import)."""
    if args.command == "report":
        from flows.report import report

        return lambda: report(args.output, parse_thresholds(args.min_score))
    if args.command == "run":
        from flows.run import run

        return lambda: run(
            args.input, args.output, _options(args), args.baseline, parse_thresholds(args.min_score)
        )
    import flows.baseline
    import flows.generate
    import flows.grade
    import flows.refine

    module = getattr(flows, args.command)
    stage_flow = getattr(module, args.command)
    if args.command in ("generate", "baseline"):
        return lambda: stage_flow(args.input, args.output, _options(args))
    return lambda: stage_flow(args.output, _options(args))


def _print_result(result: Any, output: str) -> None:
    if hasattr(result, "describe"):
        print(result.describe())
        print(f"summary:  {result.summary_path}")
    else:
        print(f"report:   {result}")
    print(f"output:   {output}/")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _print_result(_dispatch(args)(), args.output)
        return 0
    except AidsafeError as exc:
        print(f"aidsafe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
