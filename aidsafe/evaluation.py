"""What `aidsafe eval` prepares before its targets answer: the evaluation inputs and the training overlap.

- The sets: a directory of Parquet partitions (default data/eval/, one per set) with `id, prompt, label, set,
  category`; `--limit N` takes the first N rows of each, written once to OUTPUT/sets/ (so reruns and
  retries read the same files, and a changed limit is a changed input).
- Decontamination: a checkpoint that `aidsafe train` wrote records the export it was trained on
  (training.json). Every evaluation prompt is checked against that export's training prompts (exact,
  normalised, long shared n-grams, a whole shorter prompt contained: aidsafe.decontaminate); an overlap is an
  error naming the prompts, or with `--allow-overlap` is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from aidsafe.config import PROJECT_ROOT
from aidsafe.decontaminate import EvalIndex, Kind, find_overlap
from aidsafe.errors import AidsafeError, InputError
from aidsafe.partitions import discover, write_atomic

DEFAULT_SETS = PROJECT_ROOT / "data" / "eval"
SHOWN = 10


def prepare_sets(sets: Path, output: Path, limit: int | None) -> Path:
    """The directory the eval stage reads: the sets themselves, or their first `limit` rows each."""
    files = discover(str(sets))
    if limit is None:
        return sets
    destination = output / "sets"
    for path in files:
        table = pq.read_table(path)
        write_atomic(table.slice(0, limit), destination / path.name)
    for stale in set(destination.glob("*.parquet")) - {destination / p.name for p in files}:
        stale.unlink()
    return destination


def read_prompts(sets: Path) -> list[tuple[str, str]]:
    """(id, prompt) of every evaluation row."""
    rows: list[tuple[str, str]] = []
    for path in discover(str(sets)):
        table = pq.read_table(path, columns=["id", "prompt"])
        ids, prompts = table.column("id").to_pylist(), table.column("prompt").to_pylist()
        rows += [(str(i), str(p)) for i, p in zip(ids, prompts, strict=True)]
    return rows


def training_export(checkpoint: Path) -> Path | None:
    """The export a checkpoint was trained on, when aidsafe train wrote it (else None: not checkable)."""
    from aidsafe.train_card import RECORD_NAME  # {"data": EXPORT_DIR, ...} in what aidsafe train wrote

    record = checkpoint / RECORD_NAME
    if not record.is_file():
        return None
    data = json.loads(record.read_text(encoding="utf-8")).get("data")
    return Path(data) if data else None


def training_prompts(export: Path) -> list[tuple[str, str]]:
    """(id, user prompt) of an export's training split (SFT `messages` or DPO `prompt` rows)."""
    from aidsafe.records import read_records
    from aidsafe.train_data import split_file

    path = split_file(export, "train")
    if path is None:
        raise InputError(export / "train.parquet", "the training export of a compared checkpoint is missing")
    rows = read_records(path)
    found: list[tuple[str, str]] = []
    for row in rows:
        messages = row.get("messages") or row.get("prompt") or []
        user = next((m["content"] for m in messages if m.get("role") == "user"), None)
        if user:
            found.append((str(row.get("id", len(found))), str(user)))
    return found


@dataclass(frozen=True)
class TrainingOverlap:
    """Evaluation prompts that a target's training data contains: (eval id, training id, kind)."""

    target: str
    export: Path
    matches: list[tuple[str, str, Kind]]

    def describe(self) -> str:
        shown = ", ".join(f"{e} (~{t}, {k})" for e, t, k in self.matches[:SHOWN])
        more = f" and {len(self.matches) - SHOWN} more" if len(self.matches) > SHOWN else ""
        found = f"{len(self.matches)} evaluation prompt(s) in its training data {self.export}"
        return f"{self.target}: {found}: {shown}{more}"


def overlap_with(target: str, export: Path, evaluation: list[tuple[str, str]]) -> TrainingOverlap:
    """Which evaluation prompts overlap the training prompts of an export."""
    index = EvalIndex(source=export, ngram=13, min_words=6, descriptions={"train": str(export)})
    for ident, prompt in training_prompts(export):
        index.add("train", ident, prompt)
    found = find_overlap(index, [prompt for _, prompt in evaluation])
    matches = [(evaluation[i][0], m.eval_id, m.kind) for i, m in sorted(found.matches.items())]
    return TrainingOverlap(target, export, matches)


class EvaluationOverlap(AidsafeError):
    """Evaluation prompts are in the training data of a compared checkpoint."""


def check_overlap(
    checkpoints: dict[str, Path], sets: Path, allow: bool
) -> list[TrainingOverlap]:  # fmt: skip
    """The overlap of every checkpoint's training export with the sets; an error unless allowed."""
    evaluation = read_prompts(sets)
    found = []
    for name, checkpoint in checkpoints.items():
        export = training_export(checkpoint)
        if export is not None and (overlap := overlap_with(name, export, evaluation)).matches:
            found.append(overlap)
    if found and not allow:
        reasons = "; ".join(o.describe() for o in found)
        raise EvaluationOverlap(f"{reasons}. Evaluate on other prompts, or pass --allow-overlap to report it")
    return found
