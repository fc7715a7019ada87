"""The pipeline, as data: its steps in order. `aidsafe run`, `aidsafe retry`, the CLI subcommands, the stage
flows, the "run X first" messages and the report's failures by stage are all derived from PIPELINE.

Adding a stage: write aidsafe/stages/<name>.py defining one RowStage (or WholeStep), add it here.
STANDALONE lists the row stages that run on their own, outside `run` and `retry` (their own command and
flow): `eval` answers evaluation sets with a target model, `rationales` writes rationales on a local model,
`traces` makes several traces per prompt.
"""

from __future__ import annotations

from pathlib import Path

from aidsafe.errors import InputError, MissingInput
from aidsafe.partitions import discover
from aidsafe.stage import INPUT, RowStage, Step
from aidsafe.stages.baseline import BASELINE
from aidsafe.stages.dpo import DPO
from aidsafe.stages.eval import EVAL
from aidsafe.stages.generate import GENERATE
from aidsafe.stages.grade import GRADE
from aidsafe.stages.rationales import RATIONALES
from aidsafe.stages.refine import REFINE
from aidsafe.stages.report import REPORT
from aidsafe.stages.traces import TRACES
from aidsafe.summary import live_partitions, partition_files

PIPELINE: tuple[Step, ...] = (GENERATE, REFINE, GRADE, BASELINE, REPORT, DPO)
STANDALONE: tuple[RowStage, ...] = (EVAL, RATIONALES, TRACES)


def step(name: str) -> Step:
    """A step by name (of the pipeline, or a standalone stage)."""
    for candidate in (*PIPELINE, *STANDALONE):
        if candidate.name == name:
            return candidate
    raise KeyError(f"no pipeline step {name!r}; steps are {step_names()}")


def row_stage(name: str) -> RowStage:
    found = step(name)
    if not isinstance(found, RowStage):
        raise KeyError(f"{name!r} is not a row stage")
    return found


def step_names() -> list[str]:
    return [s.name for s in PIPELINE]


def run_steps(baseline: bool) -> list[Step]:
    """The steps of `aidsafe run`, in order (the optional ones only when asked for)."""
    return [s for s in PIPELINE if s.in_run == "always" or (s.in_run == "optional" and baseline)]


def live(name: str, output_dir: Path) -> set[str] | None:
    """The live partitions of what a step wrote (None: every partition there, the step has no record)."""
    found = step(name)
    return live_partitions(output_dir, name) if isinstance(found, RowStage) else live(found.reads, output_dir)


def output_files(name: str, output_dir: Path) -> list[Path]:
    """The live partition files a step wrote."""
    return partition_files(output_dir / step(name).output, live(name, output_dir))


def input_files(name: str, output_dir: Path, input: str | None = None) -> list[Path]:
    """The partitions a step reads: the user's input, or the live partitions of the step it reads from."""
    source = source_of(name, output_dir, input)
    if step(name).reads == INPUT:
        return discover(source)
    files = output_files(step(name).reads, output_dir)
    if not files:
        raise InputError(source, "no partitions to read")
    return files


def source_of(name: str, output_dir: Path, input: str | None = None) -> str:
    """What a step reads: the user's input, or the directory the step it reads from wrote (it must exist)."""
    reader = step(name)
    if reader.reads == INPUT:
        if input is None:
            raise ValueError(f"{name} reads the input: give it")
        return input
    directory = output_dir / step(reader.reads).output
    if not directory.is_dir():
        raise MissingInput(directory, reader.reads, name)
    return str(directory)
