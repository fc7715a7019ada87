"""The CLI's progress bar: rows done per stage, over every partition that stage is working on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aidsafe.progress import listening


class StageBars:
    """One bar per stage; its total grows as partitions start (skipped partitions have nothing to do)."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )  # fmt: skip
        self._tasks: dict[str, TaskID] = {}
        self._partitions: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def __call__(self, stage: str, partition: str, finished: int, total: int) -> None:
        with self._lock:
            self._partitions[(stage, partition)] = (finished, total)
            counts = [v for (s, _), v in self._partitions.items() if s == stage]
            done, whole = sum(f for f, _ in counts), sum(t for _, t in counts)
            if not self.started:  # shown from the first partition with rows to do: nothing when none has
                self.bars.start()
            if stage not in self._tasks:
                self._tasks[stage] = self.bars.add_task(stage, total=whole)
            self.bars.update(self._tasks[stage], completed=done, total=whole)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[None]:
    """Show the rows of each stage on stderr while the block runs (final counts only when not a terminal)."""
    if not enabled:
        yield
        return
    bars = StageBars(Console(stderr=True))
    try:
        with listening(bars):
            yield
    finally:
        if bars.started:
            bars.bars.stop()
