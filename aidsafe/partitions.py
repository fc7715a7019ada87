"""Parquet partitions: discovery, validation, fingerprints and atomic writes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.errors import InputError

REQUIRED_COLUMNS = ("id", "prompt")
META_KEY = b"aidsafe.meta"


def discover(source: str | Path) -> list[Path]:
    """The partitions of an input: a Parquet file, a directory of them, or a glob."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        files = sorted(
            Path(p) for p in glob.glob(text, recursive=True) if p.endswith(".parquet") and Path(p).is_file()
        )
        if not files and not any(c in text for c in "*?["):
            raise InputError(text, "input not found")
    if not files:
        raise InputError(text, "no Parquet partitions (*.parquet) found")
    return files


def fingerprint_file(path: Path) -> str:
    """Content hash of a file (not of its path)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RowRef:
    """A valid input row: its position in the file, id, prompt and (for later stages) all its values."""

    index: int
    id: str
    prompt: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Partition:
    """A read and validated input partition."""

    path: Path
    table: pa.Table
    rows: list[RowRef]
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)  # (row, id, reason)


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from exc


def _check_columns(path: Path, schema: pa.Schema) -> None:
    for name in REQUIRED_COLUMNS:
        if name not in schema.names:
            raise InputError(path, f"missing required column {name!r} (columns: {schema.names})")
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(path, f"column {name!r} must be string, found {kind}")


def _row_problem(row_id: str | None, prompt: str | None, seen: dict[str, int], max_chars: int) -> str | None:
    if row_id is None or not row_id.strip():
        return "id is null or empty"
    if row_id in seen:
        return f"duplicate id {row_id!r} (first at row {seen[row_id]})"
    if prompt is None:
        return "prompt is null"
    if not prompt.strip():
        return "prompt is empty or whitespace"
    if "\x00" in prompt:
        return "prompt contains NUL bytes"
    if len(prompt) > max_chars:
        return f"prompt has {len(prompt)} characters, over the model-context limit of {max_chars}"
    return None


def read_partition(path: Path, taken_ids: Iterable[str] = (), max_chars: int = 1_000_000) -> Partition:
    """Read a partition and sort its rows into valid ones and rejected ones (with reasons).

    taken_ids: ids already used by an earlier partition of the same input; max_chars: the longest prompt
    that fits the model context with the policies.
    """
    table = _read_table(path)
    _check_columns(path, table.schema)
    ids = table.column("id").to_pylist()
    prompts = table.column("prompt").to_pylist()
    taken = set(taken_ids)
    seen: dict[str, int] = {}
    partition = Partition(path=path, table=table, rows=[])
    for index, (row_id, prompt) in enumerate(zip(ids, prompts, strict=True)):
        problem = _row_problem(row_id, prompt, seen, max_chars)
        if problem is None and row_id in taken:
            problem = f"duplicate id {row_id!r} (used by an earlier partition)"
        if problem:
            partition.rejected.append((index, row_id, problem))
        else:
            partition.rows.append(RowRef(index, row_id, prompt))
        if row_id is not None and row_id not in seen:
            seen[row_id] = index
    return partition


def ids_by_partition(paths: list[Path]) -> dict[Path, list[str]]:
    """Ids of every readable partition, read from the id column only (for cross-partition checks)."""
    found: dict[Path, list[str]] = {}
    for path in paths:
        try:
            found[path] = [i for i in pq.read_table(path, columns=["id"]).column("id").to_pylist() if i]
        except (pa.ArrowInvalid, OSError, KeyError):
            found[path] = []  # reported with file and reason when the partition itself is read
    return found


def earlier_ids(paths: list[Path]) -> dict[Path, frozenset[str]]:
    """For each partition, the ids used by the partitions before it (in sorted order)."""
    result: dict[Path, frozenset[str]] = {}
    seen: set[str] = set()
    for path, ids in ids_by_partition(paths).items():
        result[path] = frozenset(seen)
        seen.update(ids)
    return result


def write_atomic(table: pa.Table, destination: Path, meta: dict[str, str] | None = None) -> None:
    """Write a Parquet file via a temp file and rename, so readers never see a half-written file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if meta:
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
        table = table.replace_schema_metadata(schema_meta)
    for stale in destination.parent.glob(f".{destination.name}.*.tmp"):  # left by a killed run; one writer
        stale.unlink(missing_ok=True)  # per destination, so no other write is in progress
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stored_meta(path: Path) -> dict[str, str]:
    """The aidsafe metadata recorded in an output partition (empty when absent or unreadable)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    except (pa.ArrowInvalid, OSError):
        return {}
    return dict(json.loads(raw)) if raw else {}


def stored_fingerprint(path: Path) -> str | None:
    """The fingerprint recorded in an output partition, or None when absent, empty or unreadable."""
    return stored_meta(path).get("fingerprint") or None


def stored_row_count(path: Path) -> int:
    """Number of rows of a Parquet file, from its footer."""
    return int(pq.read_metadata(path).num_rows)


def read_stage_output(path: Path) -> Partition:
    """Read an earlier stage's output partition (rows already validated), with every row's values."""
    table = _read_table(path)
    _check_columns(path, table.schema)
    rows = [RowRef(i, r["id"], r["prompt"], r) for i, r in enumerate(table.to_pylist())]
    return Partition(path=path, table=table, rows=rows)
