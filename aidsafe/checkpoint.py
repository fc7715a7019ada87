"""Checkpoints inside a partition: its finished rows saved in chunks while the other rows still run.

A kill (even SIGKILL) of a long partition loses at most the rows finished since the last chunk. A chunk is
written atomically, with the stage key in its metadata, whenever checkpoint_rows rows have finished or
checkpoint_seconds have passed since the last one; a rerun (or retry) of the partition reuses its rows exactly
like the rows of the previous output file (same stage key, id and input values: execute.reusable_rows).
Only rows that succeeded are saved; failed rows reach the failures table at the end, as before.

Chunks live in OUTPUT/.checkpoints/<stage>/<partition>/chunk-NNNNN.parquet, outside every stage directory,
so no reader of the outputs (pandas, pyarrow datasets, the later stages, the report, prune) sees them; the
partition's directory is removed once its output file is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef, write_atomic

CHECKPOINTS = ".checkpoints"  # under OUTPUT, beside (not in) the stage directories; hidden
_CHUNK = re.compile(r"chunk-(\d+)\.parquet")
Build = Callable[[list[RowRef], list[dict[str, Any]]], pa.Table]  # finished rows -> their output rows


def checkpoint_dir(output_dir: Path, stage: str, partition: str) -> Path:
    """Where the chunks of one partition of one stage are kept."""
    return output_dir / CHECKPOINTS / stage / partition


def _number(path: Path) -> int:
    match = _CHUNK.fullmatch(path.name)
    return int(match.group(1)) if match else 0


def chunk_paths(directory: Path) -> list[Path]:
    """The complete chunks of a partition in the order written (a killed write's temp file is none)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _CHUNK.fullmatch(p.name)), key=_number)


def remove_checkpoints(directory: Path) -> None:
    """Drop a partition's chunks (and temp files of killed chunk writes) once its output file is written."""
    shutil.rmtree(directory, ignore_errors=True)


class Checkpoint:
    """Collects a partition's finished rows and writes them as chunks, by count and by time."""

    def __init__(
        self, directory: Path, build: Build, meta: dict[str, str], rows: int, seconds: float
    ) -> None:
        self.directory, self.build, self.meta = directory, build, meta
        self.rows, self.seconds = rows, seconds
        existing = chunk_paths(directory)  # numbered on: a chunk whose rows are reused is never overwritten
        self.number = _number(existing[-1]) + 1 if existing else 1
        self.pending: list[tuple[RowRef, dict[str, Any]]] = []
        self.last = time.monotonic()

    def add(self, row: RowRef, values: dict[str, Any]) -> None:
        """A row finished: keep it, and write a chunk once checkpoint_rows rows are waiting."""
        self.pending.append((row, values))
        if len(self.pending) >= self.rows:
            self.flush()

    def flush(self) -> None:
        """Write the waiting rows as the next chunk (nothing when none wait); restarts the clock."""
        self.last = time.monotonic()
        if not self.pending:
            return
        rows, values = [p[0] for p in self.pending], [p[1] for p in self.pending]
        write_atomic(self.build(rows, values), self.directory / f"chunk-{self.number:05d}.parquet", self.meta)
        self.number += 1
        self.pending = []

    async def _tick(self) -> None:
        """The time trigger: write what finished once checkpoint_seconds have passed since the last chunk."""
        while True:
            await asyncio.sleep(max(0.0, self.last + self.seconds - time.monotonic()))
            if time.monotonic() - self.last >= self.seconds:
                self.flush()

    @contextlib.asynccontextmanager
    async def saving(self) -> AsyncIterator[Checkpoint]:
        """Run the time trigger while the rows run; when a bug fails the partition, save what finished."""
        ticker = asyncio.create_task(self._tick())
        try:
            yield self
        except Exception:
            with contextlib.suppress(OSError):  # the partition's own error is the one to report
                self.flush()
            raise
        finally:
            if ticker.done() and not ticker.cancelled():
                ticker.result()  # a chunk write that failed (e.g. disk full) fails the partition
            ticker.cancel()
