"""`aidsafe prune`: remove the outputs of partitions that are no longer in the input.

Nothing reads them (later stages, the report, the kept rows and the exports see only the live partitions of
each stage's last run), but they take space and would confuse a reader of the directory.
"""

from __future__ import annotations

from pathlib import Path

from aidsafe.pipeline import PIPELINE, live
from aidsafe.summary import partition_files


def stale_files(output_dir: Path) -> list[Path]:
    """Partition files (outputs and failures) of every step that belong to no live partition."""
    found: list[Path] = []
    for step in PIPELINE:
        alive = live(step.name, output_dir)
        if alive is None:
            continue  # the step has no record here: nothing is known to be stale
        found += [p for p in partition_files(output_dir / step.output) if p.stem not in alive]
        found += [p for p in partition_files(output_dir / "failures" / step.name) if p.stem not in alive]
    return sorted(set(found))


def prune(output_dir: Path, dry_run: bool = False) -> list[Path]:
    """Remove (or with dry_run only list) the stale partition files; returns them."""
    stale = stale_files(output_dir)
    if not dry_run:
        for path in stale:
            path.unlink(missing_ok=True)
    return stale
