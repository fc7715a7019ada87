"""Reading a run's outputs for the report, and writing the report files and the kept rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.charts import write_charts
from aidsafe.errors import AidsafeError
from aidsafe.output import FAILURES
from aidsafe.partitions import write_atomic
from aidsafe.pipeline import output_files
from aidsafe.report import ReportData, keep_mask, render_markdown
from aidsafe.summary import live_partitions, partition_files

T = TypeVar("T")
IO_THREADS = 8


def _each(work: Callable[[Path], T], files: list[Path]) -> list[T]:
    """work(file) for every file, in order, a few at a time (reading and fsync wait mostly on the disk)."""
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        return list(pool.map(work, files))


def read_files(files: list[Path]) -> pd.DataFrame | None:
    """Some partitions as one frame, or None when there are none."""
    if not files:
        return None
    return pa.concat_tables(_each(pq.read_table, files), promote_options="default").to_pandas()


def load_results(output_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """The live graded rows, the live graded baseline rows (if any) and every stage's live failures."""
    graded = read_files(output_files("grade", output_dir))
    if graded is None:
        raise AidsafeError(f"{output_dir / 'graded'}: no graded partitions; run `aidsafe grade` first")
    return graded, read_files(output_files("baseline", output_dir)), read_failures(output_dir)


def read_failures(output_dir: Path) -> pd.DataFrame:
    """Every stage's failures of live partitions, with the flow that recorded them (failures/<flow>/...)."""
    found = [d for d in sorted((output_dir / "failures").glob("*")) if d.is_dir()]
    files = [f for d in found for f in partition_files(d, live_partitions(output_dir, d.name))]
    files = [f for f in files if pq.read_metadata(f).num_rows]  # most are empty: read only the others
    frames = [
        table.to_pandas().assign(flow=f.parent.name)
        for f, table in zip(files, _each(pq.read_table, files), strict=True)
    ]
    empty = FAILURES.empty_table().to_pandas().assign(flow=pd.Series(dtype=str))
    return pd.concat([empty, *frames], ignore_index=True) if frames else empty


def stored_thresholds(output_dir: Path) -> dict[str, int] | None:
    """The thresholds of the last report of a run (None, the defaults, when it has no report)."""
    path = output_dir / "report" / "thresholds.json"
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else None


def write_kept(output_dir: Path, thresholds: dict[str, int]) -> int:
    """kept/<partition>.parquet: the graded rows that meet every threshold (all rows with none)."""
    graded = output_files("grade", output_dir)

    def keep(path: Path) -> int:
        table = pq.read_table(path)
        mask = keep_mask(table.select([f"score_{m}" for m in thresholds]).to_pandas(), thresholds)
        chosen = table.filter(mask.to_numpy())
        write_atomic(chosen, output_dir / "kept" / path.name)
        return int(chosen.num_rows)

    kept = sum(_each(keep, graded))
    for stale in set(partition_files(output_dir / "kept")) - {output_dir / "kept" / p.name for p in graded}:
        stale.unlink()  # kept rows of a partition that is no longer graded (removed from the input)
    return kept


def write_report_files(report: ReportData, output_dir: Path, thresholds: dict[str, int]) -> Path:
    """report/report.md with its PNG charts beside it, and the thresholds used (for `aidsafe retry`)."""
    directory = output_dir / "report"
    charts = write_charts(report, directory)
    (directory / "thresholds.json").write_text(json.dumps(thresholds), encoding="utf-8")
    path = directory / "report.md"
    path.write_text(render_markdown(report, charts), encoding="utf-8")
    return path


def write_stage_report(output_dir: Path, name: str, numbers: dict[str, object], markdown: str) -> Path:
    """A standalone stage's report: OUTPUT/report/<name>.json (its numbers) and <name>.md; the .md path."""
    directory = output_dir / "report"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(numbers, indent=2), encoding="utf-8")
    path = directory / f"{name}.md"
    path.write_text(markdown, encoding="utf-8")
    return path
