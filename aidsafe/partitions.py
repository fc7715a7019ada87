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


def _glob(pattern: str) -> list[Path]:
    """Files matching a glob; `**` does not follow symlinked directories (a symlink loop cannot hang it)."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    rest = str(Path(*parts[fixed:])) if fixed < len(parts) else ""
    if not rest or not base.is_dir():
        return []
    return [p for p in base.glob(rest) if p.suffix == ".parquet" and p.is_file()]


def discover(source: str | Path) -> list[Path]:
    """The partitions of an input: a Parquet file, a directory of them, or a glob (hidden files excluded)."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file()]
    elif path.is_file():
        files = [path]
    else:
        files = _glob(text)
        if not files and not glob.has_magic(text):
            raise InputError(text, "input not found")
    files = sorted(p for p in files if not p.name.startswith("."))
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


def _texts(table: pa.Table, name: str) -> list[str | bytes | None]:
    """A string column's values; one that is not valid UTF-8 stays bytes (its row is rejected)."""
    raw = table.column(name).cast(pa.large_binary()).to_pylist()
    values: list[str | bytes | None] = []
    for value in raw:
        try:
            values.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(value)
    return values


def _row_problem(
    row_id: str | bytes | None, prompt: str | bytes | None, seen: dict[str, int], max_chars: int
) -> str | None:
    if isinstance(row_id, bytes):
        return f"id is not valid UTF-8 ({row_id[:40]!r})"
    if row_id is None or not row_id.strip():
        return "id is null or empty"
    if row_id in seen:
        return f"duplicate id {row_id!r} (first at row {seen[row_id]})"
    if isinstance(prompt, bytes):
        return "prompt is not valid UTF-8"
    if prompt is None:
        return "prompt is null"
    if not prompt.strip():
        return "prompt is empty or whitespace"
    if "\x00" in prompt:
        return "prompt contains NUL bytes"
    if len(prompt) > max_chars:
        return f"prompt has {len(prompt)} characters, over the model-context limit of {max_chars}"
    return None


def read_partition(
    path: Path, taken_ids: Iterable[str] = (), max_chars: int = 1_000_000, values: bool = False
) -> Partition:
    """Read a partition and sort its rows into valid ones and rejected ones (with reasons).

    taken_ids: ids already used by an earlier partition of the same input; max_chars: the longest prompt
    that fits the model context with the policies; values: give each row all its columns (a stage that
    reads more of the input than the prompt, such as eval's labels and choices).
    """
    table = _read_table(path)
    _check_columns(path, table.schema)
    taken = set(taken_ids)
    seen: dict[str, int] = {}
    partition = Partition(path=path, table=table, rows=[])
    for index, (row_id, prompt) in enumerate(zip(_texts(table, "id"), _texts(table, "prompt"), strict=True)):
        problem = _row_problem(row_id, prompt, seen, max_chars)
        if problem is None and row_id in taken:
            problem = f"duplicate id {row_id!r} (used by an earlier partition)"
        if isinstance(row_id, str):
            seen.setdefault(row_id, index)
        if problem or not isinstance(row_id, str) or not isinstance(prompt, str):
            partition.rejected.append((index, row_id if isinstance(row_id, str) else None, problem or "?"))
        else:
            partition.rows.append(RowRef(index, row_id, prompt))
    if values:
        records = table.to_pylist()
        partition.rows = [RowRef(r.index, r.id, r.prompt, records[r.index]) for r in partition.rows]
    return partition


def ids_by_partition(paths: list[Path]) -> dict[Path, list[str]]:
    """Ids of every readable partition, read from the id column only (for cross-partition checks)."""
    found: dict[Path, list[str]] = {}
    for path in paths:
        try:
            ids = _texts(pq.read_table(path, columns=["id"]), "id")
            found[path] = [i for i in ids if isinstance(i, str) and i]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, KeyError):
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


def _umask() -> int:
    """The process's umask (read once: setting it to read it, as here, races other threads' files)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _umask()


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
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
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
