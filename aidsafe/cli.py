"""The `aidsafe` console command: the only place where domain errors become user messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aidsafe.errors import AidsafeError
from aidsafe.terminal import progress_bar

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
    dpo = _add(sub, "dpo", "DPO pairs by belief augmentation (OUTPUT/kept -> OUTPUT/dpo)", input=False)
    dpo.add_argument(
        "--attempts", type=int, dest="dpo_attempts", help="ear-whisperer attempts per row (default 3)"
    )
    dpo.add_argument("--max-policy-score", type=int, dest="dpo_max_score",
                     help="max CoT policy faithfulness of a rejected CoT (default 2)")  # fmt: skip
    _add(sub, "retry", "redo only the rows in the failures tables (and what depends on them)", input=False)
    _export_parser(sub)
    return parser


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a trainer-ready dataset (SFT or DPO) with its dataset card")
    p.add_argument(
        "kind", choices=["sft", "dpo"], help="sft: kept rows as conversations; dpo: preference pairs"
    )
    p.add_argument("--output", required=True, help="the run's output directory")
    p.add_argument("--dest", type=Path, help="where to write (default OUTPUT/export/KIND)")
    p.add_argument("--cot", choices=["think", "field"], default="think",
                   help="CoT in <think>...</think> before the response, or in reasoning_content")  # fmt: skip
    p.add_argument("--format", choices=["parquet", "jsonl", "both"], default="both")
    p.add_argument(
        "--split", default="0.9,0.05,0.05", help="train,validation,test ratios (default 0.9,0.05,0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")


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

    names = ("config", "policies", "concurrency", "max_rounds", "agents", "base_url", "model", "max_tokens",
             "dpo_attempts", "dpo_max_score")  # fmt: skip
    return Options(**{n: getattr(args, n, None) for n in names})


def _export(args: argparse.Namespace) -> list[str]:
    from aidsafe.export import export, parse_ratios

    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    split = (parse_ratios(args.split), args.seed)
    target, counts = export(args.kind, Path(args.output), args.dest, args.cot, formats, split)
    rows = ", ".join(f"{name} {n}" for name, n in counts.items())
    return [f"{args.kind} rows: {rows}", f"dataset:  {target}/", f"card:     {target / 'README.md'}"]


def _stage_lines(summary: Any) -> list[str]:
    return [summary.describe(), f"summary:  {summary.summary_path}", f"output:   {summary.output_dir}/"]


def _dispatch(args: argparse.Namespace) -> Callable[[], list[str]]:
    """What a command runs, as a call returning the lines to print (Prefect is imported only when needed)."""
    if args.command == "export":
        return lambda: _export(args)
    if args.command == "report":
        from flows.report import report

        return lambda: [f"report:   {report(args.output, parse_thresholds(args.min_score))}"]
    if args.command == "retry":
        from flows.retry import retry

        options = _options(args)
        return lambda: [f"retried:  {retry(args.output, options)}", f"output:   {args.output}/"]
    if args.command == "run":
        from flows.run import run

        thresholds = parse_thresholds(args.min_score)
        options = _options(args)
        return lambda: [f"report:   {run(args.input, args.output, options, args.baseline, thresholds)}",
                        f"output:   {args.output}/"]  # fmt: skip
    import flows.baseline
    import flows.dpo
    import flows.generate
    import flows.grade
    import flows.refine

    stage_flow = getattr(getattr(flows, args.command), args.command)
    if args.command in ("generate", "baseline"):
        return lambda: _stage_lines(stage_flow(args.input, args.output, _options(args)))
    return lambda: _stage_lines(stage_flow(args.output, _options(args)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = _dispatch(args)
        with progress_bar(enabled=args.command not in ("export", "report")):
            lines = command()
        for line in lines:
            print(line)
        return 0
    except AidsafeError as exc:
        print(f"aidsafe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
