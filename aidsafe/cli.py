"""The `aidsafe` console command: the only place where domain errors become user messages.

The subcommands are derived from aidsafe.pipeline.PIPELINE (one per step), plus `run`, `retry` and
`export`. Options are validated (settings, policies, prompts, thresholds) before any Prefect machinery
starts; every user error is one `aidsafe: error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

from aidsafe.children import reap_orphans
from aidsafe.config import Options, add_setting_arguments, apply_prefect_defaults, options_from_args
from aidsafe.errors import AidsafeError, ConfigError
from aidsafe.interrupt import exit_now, interrupts
from aidsafe.lock import output_lock
from aidsafe.pipeline import PIPELINE, run_steps, source_of, step, step_names
from aidsafe.preflight import check_input, check_output, check_settings
from aidsafe.stage import INPUT, RowStage, WholeStep
from aidsafe.terminal import progress_bar

DESCRIPTION = """\
aidsafe makes policy-embedded chain-of-thought safety data (AIDSAFE). Steps, each a Prefect flow (row
stages with one task per Parquet partition): generate (intents, first draft, multi-agent deliberation) ->
refine -> grade, the zero-shot baseline (LLM_ZS), the report with the kept rows, and DPO pairs; `run` does
the whole job. Each row stage writes OUTPUT/<stage dir>/ (one partition per input partition),
OUTPUT/failures/<stage>/ and OUTPUT/summary/<stage>.json; a rerun skips partitions whose input content,
policies, prompts and settings are unchanged.
"""
ENDPOINTS = """\
Endpoints: with nothing configured every role runs on the embedded SmolLM2-135M model (a local llama.cpp
server started for the run). OPENAI_BASE_URL, OPENAI_API_KEY and AIDSAFE_MODEL set the endpoint of every
role the config file does not set; --base-url/--model override both. API keys are read only from the
environment (see api_key_env in the config file), never from the command line.
"""
Command = Callable[[], list[str]]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is an AidsafeError (one line, exit 2) that never echoes stray values."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):  # may hold a pasted secret: name options only
            options = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
            message = f"unrecognized option(s): {' '.join(options) or '(values without an option)'}"
        raise ConfigError(message if self.prog == "aidsafe" else f"{self.prog}: {message}")


def _add(sub: Any, name: str, help: str, stages: list[str], *, input: bool) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, epilog=ENDPOINTS if stages else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    if input:
        p.add_argument("--input", required=True, help="Parquet file, directory of partitions, or glob")
    p.add_argument("--output", required=True, help="output directory (created if missing)")
    if stages:
        add_setting_arguments(p, stages)
    return p


def _thresholds(p: argparse.ArgumentParser) -> None:
    from aidsafe.thresholds import DEFAULT_THRESHOLDS

    defaults = ", ".join(f"{m}={n}" for m, n in DEFAULT_THRESHOLDS.items())
    text = (f"keep only rows scoring at least N on METRIC (repeatable; sets that metric over the defaults "
            f"{defaults}); `none` drops every threshold (keep all graded rows)")  # fmt: skip
    p.add_argument("--min-score", action="append", default=[], metavar="METRIC=N|none", help=text)


def _calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibrate", metavar="FILE",
        help="instead of grading OUTPUT/refined: grade a labelled calibration set (JSONL or Parquet, e.g. "
        "data/calibration/grader-calibration.jsonl) and write the grader's agreement to OUTPUT/calibration/",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aidsafe", description=DESCRIPTION, epilog=ENDPOINTS,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    every = [s.name for s in PIPELINE if isinstance(s, RowStage)]
    order = " -> ".join(s.name if s.in_run == "always" else f"({s.name})" for s in run_steps(baseline=True))
    run = _add(sub, "run", f"the whole job: {order}",
               [s.name for s in run_steps(baseline=True) if isinstance(s, RowStage)], input=True)  # fmt: skip
    run.add_argument("--baseline", action="store_true", help="also run the zero-shot baseline (LLM_ZS)")
    _thresholds(run)
    for s in PIPELINE:
        p = _add(sub, s.name, s.help, [s.name] if isinstance(s, RowStage) else [], input=s.reads == INPUT)
        if isinstance(s, WholeStep):
            _thresholds(p)
        if s.name == "grade":
            _calibration(p)
    _add(sub, "retry", "redo only the rows in the failures tables (and what depends on them)", every,
         input=False)  # fmt: skip
    _export_parser(sub)
    _eval_parser(sub)
    _rationales_parser(sub)
    _traces_parser(sub)
    _train_parser(sub)
    _sample_parser(sub)
    prune = sub.add_parser("prune", help="remove the outputs of partitions no longer in the input")
    prune.add_argument("--output", required=True, help="the run's output directory")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    return parser


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a trainer-ready dataset (SFT or DPO) with its dataset card")
    p.add_argument(
        "kind",
        choices=["sft", "dpo", "rationales", "sets"],
        help="sft: kept rows as conversations; dpo: preference pairs; rationales: the student rows of "
        "`aidsafe rationales` (factual and counterfactual); sets: the kept traces of `aidsafe traces`, one "
        "unordered set per prompt",
    )
    p.add_argument("--output", required=True, help="the run's output directory")
    p.add_argument("--dest", type=Path, help="where to write (default OUTPUT/export/KIND)")
    p.add_argument("--cot", choices=["think", "field", "none"], default="think",
                   help="CoT in <think>...</think> before the response, in reasoning_content, or left out "
                   "(none: the response alone)")  # fmt: skip
    p.add_argument("--source", choices=["refined", "baseline"], default="refined",
                   help="sft only: the refined answers (default), or the zero-shot baseline's answers to the "
                   "same kept prompts, the control (SFT_OG with --cot none; default --dest "
                   "OUTPUT/export/sft-baseline)")  # fmt: skip
    p.add_argument("--format", choices=["parquet", "jsonl", "both"], default="both")
    p.add_argument(
        "--split", default="0.9,0.05,0.05", help="train,validation,test ratios (default 0.9,0.05,0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--decontaminate", action="store_true",
                   help="drop rows whose prompt overlaps an evaluation set (default: report)")  # fmt: skip
    p.add_argument("--min-score", action="append", metavar="METRIC=N|none",
                   help="sets only: select the stored traces again, keeping those scoring at least N "
                   "on METRIC (repeatable, over the default thresholds; `none`: every distinct "
                   "trace)")  # fmt: skip
    p.add_argument("--eval-sets", type=Path, metavar="FILE",
                   help="the evaluation sets to check against (default data/eval_sets.toml)")  # fmt: skip


def _eval_parser(sub: Any) -> None:
    from aidsafe.evaluation import DEFAULT_SETS

    p = _add(sub, "eval", "answer evaluation sets with one or more target models and judge every answer: "
             "safe-response rate, over-refusal, jailbreak robustness, utility, side by side", ["eval"],
             input=False)  # fmt: skip
    p.add_argument("--target", action="append", default=[], metavar="NAME=SPEC",
                   help="a model to evaluate (repeatable; the first is the reference): "
                   "NAME=BASE_URL[#MODEL], NAME=hf:PATH (a local checkpoint; hf:embedded: the embedded model "
                   "via transformers) or NAME=embedded (default: base=embedded)")  # fmt: skip
    p.add_argument(
        "--sets", type=Path, default=DEFAULT_SETS, help=f"evaluation partitions (default {DEFAULT_SETS})"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N prompts of each set")
    p.add_argument("--allow-overlap", action="store_true",
                   help="report, instead of refusing, evaluation prompts in a checkpoint's training "
                   "data")  # fmt: skip
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="the aidsafe run the fine-tuned targets were trained on: its grader means in the "
                   "report")  # fmt: skip
    p.add_argument("--retry", action="store_true", help="also redo the rows in the failures tables")


FROM_STAGES = {"kept": "kept", "graded": "graded", "refined": "refined"}  # --from-stage -> OUTPUT/<dir>


def _rationales_parser(sub: Any) -> None:
    p = _add(sub, "rationales", "rationales for known answers by contrastive decoding on a local model (the "
             "teacher), counterfactual rationales, and the simulator's check: leakage-adjusted gain",
             ["rationales"], input=False)  # fmt: skip
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="Parquet file, directory of partitions, or glob: rows with id, "
                        "prompt and answer (and optional choices)")  # fmt: skip
    source.add_argument(
        "--from-stage",
        choices=list(FROM_STAGES),
        help="the rows of a finished aidsafe run in OUTPUT (kept: the rows the report kept)",
    )
    p.add_argument("--retry", action="store_true", help="also redo the rows in the failures tables")


def _traces_parser(sub: Any) -> None:
    p = _add(sub, "traces", "K different traces per prompt (one per configuration of --trace-configs), each "
             "deliberated, refined and graded; the kept set per prompt, without near-duplicates",
             ["traces", "generate", "refine", "grade"], input=True)  # fmt: skip
    p.add_argument("--retry", action="store_true", help="also redo the rows in the failures tables")


# --option of `aidsafe train` -> its type (the help and default come from aidsafe.train_config.TrainSettings)
TRAIN_OPTIONS: dict[str, Callable[[str], Any]] = {
    "--max-steps": int, "--epochs": float, "--learning-rate": float, "--lora-rank": int, "--max-length": int,
    "--seed": int, "--batch-size": int, "--threads": int, "--beta": float,
}  # fmt: skip


def _train_parser(sub: Any) -> None:
    from aidsafe.train_config import TrainSettings

    fields = TrainSettings.model_fields
    p = sub.add_parser("train", help="fine-tune a local model on an export (TRL SFTTrainer / DPOTrainer; "
                       "ssft: set-supervised with forking tokens)")  # fmt: skip
    p.add_argument("kind", choices=["sft", "dpo", "ssft"],
                   help="sft: on an SFT export; dpo: on a DPO export; ssft: on a set export (`aidsafe export "
                   "sets`), K forking tokens matched to each prompt's traces")  # fmt: skip
    p.add_argument("--data", required=True, type=Path, metavar="EXPORT_DIR", help="e.g. OUTPUT/export/sft")
    p.add_argument(
        "--output", required=True, help="the checkpoint directory to write (new, or an earlier one)"
    )
    p.add_argument("--base", type=Path, metavar="PATH",
                   help="a local transformers checkpoint (default: the embedded SmolLM2-135M)")  # fmt: skip
    p.add_argument("--cache-dir", help="where the embedded model is converted (default: the settings')")
    for flag, kind in TRAIN_OPTIONS.items():
        field = fields[flag[2:].replace("-", "_")]
        default = "" if field.default is None else f" (default {field.default})"
        p.add_argument(flag, type=kind, help=f"{field.description}{default}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora", dest="lora", action="store_true", default=None,
                      help="train a LoRA adapter, merged into the saved model (default)")  # fmt: skip
    mode.add_argument("--full", dest="lora", action="store_false", help="train every weight")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=fields["device"].description)
    p.add_argument("--checkpointing", action="store_true", default=None,
                   help=fields["checkpointing"].description)  # fmt: skip
    _ssft_arguments(p)


def _ssft_arguments(p: argparse.ArgumentParser) -> None:
    from aidsafe.ssft import SsftSettings

    fields = SsftSettings.model_fields
    p.add_argument("--forks", type=int, help=f"ssft only: {fields['forks'].description} (default 4)")
    p.add_argument("--assignment", choices=["match", "fixed"],
                   help=f"ssft only: {fields['assignment'].description} (default match)")  # fmt: skip


def _sample_parser(sub: Any) -> None:
    p = sub.add_parser("sample", help="answer a prompt once per forking token of an SSFT checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path, help="an `aidsafe train ssft` output")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--forks", type=int, help="the first K forking tokens (default: all of the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per answer (default 256)")


def parse_thresholds(items: list[str]) -> dict[str, int]:
    """--min-score METRIC=N|none items over the default thresholds, checked (metric names, 1-5)."""
    from aidsafe.thresholds import parse_thresholds as parse

    return parse(items)


def checked_options(args: argparse.Namespace) -> Options:
    """The explicit settings of a command, resolved once now so that any error shows before a flow starts."""
    options = options_from_args(args)
    check_settings(options)
    return options


def check_paths(args: argparse.Namespace) -> None:
    """The input (if the command reads it) and the output directory, before a flow starts."""
    output, input = Path(args.output), getattr(args, "input", None)
    if input is not None:
        check_input(input)
    if args.command in step_names():
        source_of(args.command, output, input)  # what it reads must exist: "run X first"
    check_output(output, input)


def _export(args: argparse.Namespace) -> Command:
    from aidsafe.decontaminate import DEFAULT_EVAL_SETS, summary_line
    from aidsafe.export import export, parse_ratios

    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    if args.min_score is not None and args.kind != "sets":
        raise ConfigError("--min-score is an option of `export sets` (for sft: `aidsafe report --min-score`)")
    thresholds = None if args.min_score is None else parse_thresholds(args.min_score)
    split = (parse_ratios(args.split), args.seed)
    checks = (args.decontaminate, args.eval_sets or DEFAULT_EVAL_SETS)

    def command() -> list[str]:
        if args.kind == "sets":
            from aidsafe.set_export import export_sets

            done = export_sets(Path(args.output), args.dest, split, *checks, thresholds=thresholds)
            return _exported("sets (prompts)", done)
        if args.kind == "rationales":
            from aidsafe.rationale_export import export_rationales

            return _exported(
                "rationales rows", export_rationales(Path(args.output), args.dest, split, *checks)
            )
        done = export(args.kind, Path(args.output), args.dest, args.cot, formats, split, *checks,
                      source=args.source)  # fmt: skip
        rows = ", ".join(f"{name} {n}" for name, n in done.counts.items())
        return [f"{args.kind} rows: {rows}", f"overlap:  {summary_line(done.overlap, done.dropped)}",
                f"dataset:  {done.target}/", f"card:     {done.target / 'README.md'}"]  # fmt: skip

    return command


def _exported(what: str, done: Any) -> list[str]:
    """The lines of `export rationales|sets`: the rows of a standalone stage (Parquet and JSONL, no --cot)."""
    return [f"{what}: {', '.join(f'{n} {c}' for n, c in done.counts.items())}",
            f"dataset:  {done.target}/", f"card:     {done.target / 'README.md'}"]  # fmt: skip


def _train(args: argparse.Namespace) -> Command:
    """`train`: settings, export, base and output checked now; the training runs as the `train` flow."""
    from aidsafe.train import check_output as check_train_output
    from aidsafe.train_config import check_base, train_settings
    from aidsafe.train_data import load_export
    from aidsafe.train_run import resolve_device

    names = [flag[2:].replace("-", "_") for flag in TRAIN_OPTIONS] + ["lora", "device", "checkpointing"]
    if args.kind == "ssft":
        return _train_ssft(args, names)
    if args.forks is not None or args.assignment is not None:
        raise ConfigError("--forks and --assignment are options of `aidsafe train ssft` only")
    settings = train_settings({name: getattr(args, name) for name in names})
    load_export(args.data, args.kind)
    if args.base is not None:
        check_base(args.base)
    if settings.device == "cuda":
        resolve_device("cuda")  # imports torch: only when a GPU is asked for
    check_train_output(Path(args.output))
    cache = None if args.base else str(Options(cache_dir=args.cache_dir).load().cache_dir)

    def command() -> list[str]:
        from flows.train import train

        base = str(args.base) if args.base else None
        return train(args.kind, str(args.data), args.output, base, settings, cache).lines()

    return command


def _train_ssft(args: argparse.Namespace, names: list[str]) -> Command:
    """`train ssft`: the set export, settings, base and output checked now; trained as the `train` flow."""
    from aidsafe.ssft import ssft_settings
    from aidsafe.ssft_data import load_sets
    from aidsafe.train import check_output as check_train_output
    from aidsafe.train_config import check_base

    values = {name: getattr(args, name) for name in [*names, "forks", "assignment"]}
    settings = ssft_settings(values)  # an option of sft/dpo only (--lora-rank, --beta, ...) is refused
    load_sets(args.data)
    if args.base is not None:
        check_base(args.base)
    check_train_output(Path(args.output))
    cache = None if args.base else str(Options(cache_dir=args.cache_dir).load().cache_dir)

    def command() -> list[str]:
        from flows.train import train

        base = str(args.base) if args.base else None
        return train("ssft", str(args.data), args.output, base, settings, cache).lines()

    return command


def _sample(args: argparse.Namespace) -> list[str]:
    """`sample`: one greedy answer per forking token, printed (no Prefect, no output directory)."""
    from aidsafe.fork_sampling import fork_diversity, sample_forks

    forks = sample_forks(args.checkpoint, args.prompt, args.forks, args.max_new_tokens)
    lines = [f"{fork.token} ({fork.seconds:.1f} s):\n{fork.text}\n" for fork in forks]
    diversity = fork_diversity([fork.text for fork in forks])
    return [
        *lines,
        f"diversity: {'n/a' if diversity is None else f'{diversity:.3f}'} (mean pairwise 1 - Jaccard)",
    ]


def _pipeline_command(args: argparse.Namespace) -> Command:
    """run, retry or one step: validated now, run as Prefect flows when called."""
    thresholds = parse_thresholds(getattr(args, "min_score", []))
    options = checked_options(args) if args.command != "report" else None
    check_paths(args)
    if args.command == "run":
        from flows.run import run

        return lambda: [f"report:   {run(args.input, args.output, options, args.baseline, thresholds)}",
                        f"output:   {args.output}/"]  # fmt: skip
    if args.command == "retry":
        from flows.run import retry

        return lambda: [f"retried:  {retry(args.output, options)}", f"output:   {args.output}/"]
    from flows.stages import FLOWS

    chosen, stage_flow = step(args.command), FLOWS[args.command]
    if isinstance(chosen, WholeStep):
        return lambda: stage_flow(args.output, thresholds).lines
    if args.command == "dpo":
        return lambda: [*stage_flow(args.output, None, options).lines(), dpo_line(Path(args.output))]
    return lambda: stage_flow(args.output, getattr(args, "input", None), options).lines()


def dpo_line(output: Path) -> str:
    """The dpo stage's result in one line: pairs, success rate, attempts and whisperer refusals."""
    from aidsafe.dpo_report import read_dpo_stats

    stats = read_dpo_stats(output)
    if stats is None:
        return "pairs:    none"
    return (f"pairs:    {stats.pairs} of {stats.rows} rows ({stats.success_rate:.1%}), "
            f"{stats.mean_attempts:.2f} attempts per row, {stats.refusals} whisperer refusals")  # fmt: skip


def _calibrate(args: argparse.Namespace) -> Command:
    """`grade --calibrate FILE`: the labelled set and the settings checked now; no Prefect, no run needed."""
    from aidsafe.calibrate import calibrate
    from aidsafe.calibration import load_calibration

    options = checked_options(args)
    rows = load_calibration(Path(args.calibrate))
    check_output(Path(args.output))
    return lambda: calibrate(rows, Path(args.calibrate), Path(args.output), options)


def _eval(args: argparse.Namespace) -> Command:
    """`eval`: targets, sets and settings checked now; the eval flow runs when called."""
    from aidsafe.targets import parse_targets

    options = checked_options(args)
    parse_targets(args.target)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be at least 1")
    check_input(str(args.sets))
    check_output(Path(args.output))

    def command() -> list[str]:
        from flows.evaluate import evaluate

        report = evaluate(args.output, args.target, str(args.sets), options, args.limit, args.retry,
                          args.allow_overlap, str(args.run) if args.run else None)  # fmt: skip
        return [f"report:   {report}", f"output:   {args.output}/"]

    return command


def _rationales(args: argparse.Namespace) -> Command:
    """`rationales`: settings, teacher, prompt file and input checked now; the flow runs when called."""
    from aidsafe.teacher import check_teacher

    options = checked_options(args)
    check_teacher(options.load())
    source = args.input or str(Path(args.output) / FROM_STAGES[args.from_stage])
    check_input(source)
    check_output(Path(args.output), args.input)

    def command() -> list[str]:
        from flows.rationales import rationales

        return rationales(args.output, source, options, args.retry)

    return command


def _traces(args: argparse.Namespace) -> Command:
    """`traces`: settings, policies, prompts, the recipe and the input checked now; the flow runs when
    called."""
    from aidsafe.policies import load_policies
    from aidsafe.prompts import load_prompts
    from aidsafe.trace_recipe import check_recipe

    options = checked_options(args)
    settings = options.load()
    check_recipe(
        settings, set(load_prompts(settings.prompts_dir, load_policies(settings.policies_dir).render()).focus)
    )
    check_paths(args)

    def command() -> list[str]:
        from flows.traces import traces

        return traces(args.output, args.input, options, args.retry)

    return command


def _prune(args: argparse.Namespace) -> Command:
    from aidsafe.prune import prune

    def command() -> list[str]:
        removed = prune(Path(args.output), args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        return [f"{verb}: {path}" for path in removed] + [f"{verb} {len(removed)} stale partition file(s)"]

    return command


def stage_counts(args: argparse.Namespace) -> list[str]:
    """Rows ok and failed per row stage that `run` or `retry` ran here (from their summaries)."""
    if args.command not in ("run", "retry"):
        return []
    steps = run_steps(args.baseline) if args.command == "run" else list(PIPELINE)
    lines = []
    for name in (s.name for s in steps if isinstance(s, RowStage)):
        path = Path(args.output) / "summary" / f"{name}.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            lines.append(f"{name + ':':<10}{summary['rows_ok']} rows ok, {summary['rows_failed']} failed")
    return lines


def _services(args: argparse.Namespace) -> AbstractContextManager[object]:
    """What a pipeline command runs inside: a Prefect API (a temporary one when none is configured)."""
    if args.command in ("export", "prune") or getattr(args, "calibrate", None):
        return nullcontext()
    from aidsafe.prefect_server import prefect_api

    for stopped in reap_orphans():
        print(f"aidsafe: stopped the {stopped}", file=sys.stderr)
    return prefect_api(Path(args.output) / "logs" / "prefect-server.log")


def _execute(args: argparse.Namespace) -> list[str]:
    """Validate, then run the command holding the output directory's lock."""
    if args.command == "sample":
        return _sample(args)
    commands = {"export": _export, "prune": _prune, "eval": _eval, "train": _train, "rationales": _rationales,
                "traces": _traces}  # fmt: skip
    if getattr(args, "calibrate", None):
        commands["grade"] = _calibrate
    command = commands.get(args.command, _pipeline_command)(args)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    bar = progress_bar(enabled=args.command not in ("export", "report", "prune"))
    with output_lock(args.output), _services(args), bar:
        try:
            return command() + stage_counts(args)
        except AidsafeError:
            print("\n".join(stage_counts(args)))  # what was done before it failed
            raise


def main(argv: Sequence[str] | None = None) -> int:
    apply_prefect_defaults()
    with interrupts() as interrupted:
        try:
            for line in _execute(build_parser().parse_args(argv)):
                print(line)
            return 0
        except AidsafeError as exc:
            print(f"aidsafe: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"aidsafe: interrupted ({signal.Signals(interrupted.exit_code - 128).name}): finished "
                  "partitions are kept; run the same command again to go on", file=sys.stderr)  # fmt: skip
            exit_now(interrupted.exit_code)
            raise  # not reached


if __name__ == "__main__":
    sys.exit(main())
