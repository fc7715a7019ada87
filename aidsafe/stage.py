"""What a pipeline step is. Each step declares, on its own object, everything the rest of aidsafe derives
from it: its name (CLI command, flow, failures/<name>/, summary/<name>.json), what it reads, where it writes,
its prompts and roles (which, with the settings table, make up its identity), its output columns and what it
does. aidsafe.pipeline.PIPELINE lists them in order.

Two kinds: a RowStage processes every row of every partition of what it reads (one Prefect task per
partition, rows concurrently); a WholeStep runs once over a run's outputs (the report, later training).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from aidsafe.calls import RowCalls
from aidsafe.config import Settings
from aidsafe.errors import StageFailed
from aidsafe.partitions import Partition, RowRef, read_partition, read_stage_output
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet

INPUT = "input"  # `reads` of a step that reads the user's input partitions
InRun = Literal["always", "optional", "never"]  # part of `aidsafe run`: always, on request, or not


@dataclass(frozen=True)
class RowContext:
    """What a stage's row function gets besides the row: the row's model calls and the run's settings."""

    calls: RowCalls
    settings: Settings
    policies: PolicySet
    prompts: PromptSet
    # parts of the row that failed while the row reached the output (one trace configuration of several):
    # each becomes a line of the failures table, its stage "<part>/<stage>" (aidsafe.output.PART)
    parts_failed: list[tuple[str, StageFailed]] = field(default_factory=list)


RowFunction = Callable[[RowRef, RowContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class RowStage:
    """A stage that adds columns to every row of what it reads."""

    name: str
    help: str
    reads: str  # INPUT, or the name of the step whose output it reads
    output: str  # its directory under the output directory
    prompts: tuple[str, ...]  # the prompt files it renders
    roles: Callable[[Settings], list[str]]  # the roles it calls
    columns: pa.Schema  # the columns it adds
    process: RowFunction  # one row -> its new columns
    in_run: InRun = "always"
    input_values: bool = False  # a stage reading the input: its rows carry every input column as values
    files: tuple[Path, ...] = ()  # files besides its prompts that decide its rows (in its fingerprint)
    setting_files: Callable[[Settings], tuple[Path, ...]] | None = None  # such files found by the settings

    def identity(self, settings: Settings) -> str:
        """Hash of the settings that decide this stage's rows (its roles' endpoints and its own knobs)."""
        return settings.stage_identity(self.name, self.roles(settings))

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        """One partition of what this stage reads: validated input rows, or an earlier stage's rows."""
        if self.reads == INPUT:
            return read_partition(path, taken_ids, max_chars, self.input_values)
        return read_stage_output(path)


@dataclass(frozen=True)
class StepResult:
    """What a WholeStep reports: lines for the terminal, and Markdown / table for the Prefect UI."""

    path: Path
    lines: list[str]
    markdown: str = ""
    table: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class WholeStep:
    """A step that runs once over a run's output directory (e.g. the report and the kept rows)."""

    name: str
    help: str
    reads: str
    output: str
    run: Callable[[Path, dict[str, int] | None], StepResult]  # (output dir, thresholds; None: defaults)
    in_run: InRun = "always"


Step = RowStage | WholeStep
