"""Parquet partitions: discovery, row validation, fingerprints and atomic writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aidsafe.errors import InputError
from aidsafe.partitions import (
    discover,
    earlier_ids,
    fingerprint_file,
    read_partition,
    stored_fingerprint,
    write_atomic,
)
from tests.conftest import write_partition

ROWS = [{"id": "a", "prompt": "hello"}, {"id": "b", "prompt": "world"}]


def rejected_reasons(path: Path, taken: tuple[str, ...] = ()) -> dict[int, str]:
    return {row: reason for row, _, reason in read_partition(path, taken).rejected}


# --- discover -------------------------------------------------------------------------------------


def test_discover_directory_lists_only_parquet_sorted(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.parquet", "c.parquet"):
        write_partition(tmp_path / name, ROWS)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".b.parquet.abc123.tmp").write_bytes(b"half written")
    (tmp_path / "sub.parquet").mkdir()
    assert discover(tmp_path) == [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"]


def test_discover_accepts_a_string_path(tmp_path: Path) -> None:
    write_partition(tmp_path / "a.parquet", ROWS)
    assert discover(str(tmp_path)) == [tmp_path / "a.parquet"]


def test_discover_single_file(tmp_path: Path) -> None:
    path = write_partition(tmp_path / "one.parquet", ROWS)
    write_partition(tmp_path / "other.parquet", ROWS)
    assert discover(path) == [path]


def test_discover_glob(tmp_path: Path) -> None:
    for name in ("x2.parquet", "x1.parquet", "y1.parquet"):
        write_partition(tmp_path / name, ROWS)
    assert discover(str(tmp_path / "x*.parquet")) == [tmp_path / "x1.parquet", tmp_path / "x2.parquet"]


def test_discover_recursive_glob(tmp_path: Path) -> None:
    write_partition(tmp_path / "d1" / "a.parquet", ROWS)
    write_partition(tmp_path / "d2" / "b.parquet", ROWS)
    assert discover(str(tmp_path / "**" / "*.parquet")) == [
        tmp_path / "d1/a.parquet",
        tmp_path / "d2/b.parquet",
    ]


def test_discover_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match="not found") as info:
        discover(missing)
    assert info.value.path == str(missing)


def test_discover_empty_directory_names_it(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no Parquet partitions") as info:
        discover(tmp_path)
    assert info.value.path == str(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_discover_glob_without_matches_names_it(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(InputError, match="no Parquet partitions") as info:
        discover(pattern)
    assert info.value.path == pattern


# --- read_partition -------------------------------------------------------------------------------


def test_valid_rows_keep_their_index(tmp_path: Path) -> None:
    path = write_partition(
        tmp_path / "p.parquet",
        [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": None}, {"id": "c", "prompt": "three"}],
    )
    partition = read_partition(path)
    assert [(r.index, r.id, r.prompt) for r in partition.rows] == [(0, "a", "one"), (2, "c", "three")]
    assert [(row, row_id) for row, row_id, _ in partition.rejected] == [(1, "b")]
    assert partition.table.num_rows == 3 and partition.path == path


def test_null_prompt_is_rejected(tmp_path: Path) -> None:
    path = write_partition(tmp_path / "p.parquet", [*ROWS, {"id": "c", "prompt": None}])
    assert rejected_reasons(path) == {2: "prompt is null"}


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_or_whitespace_prompt_is_rejected(tmp_path: Path, prompt: str) -> None:
    path = write_partition(tmp_path / "p.parquet", [{"id": "x", "prompt": prompt}, *ROWS])
    assert rejected_reasons(path) == {0: "prompt is empty or whitespace"}


@pytest.mark.parametrize("row_id", [None, "", "  "])
def test_null_or_empty_id_is_rejected(tmp_path: Path, row_id: str | None) -> None:
    path = write_partition(tmp_path / "p.parquet", [*ROWS, {"id": row_id, "prompt": "fine"}])
    partition = read_partition(path)
    assert partition.rejected == [(2, row_id, "id is null or empty")]
    assert [r.id for r in partition.rows] == ["a", "b"]


def test_duplicate_id_rejects_the_second_and_names_the_first_row(tmp_path: Path) -> None:
    path = write_partition(
        tmp_path / "p.parquet",
        [{"id": "z", "prompt": "p0"}, {"id": "a", "prompt": "first"}, {"id": "a", "prompt": "second"}],
    )
    partition = read_partition(path)
    assert [(r.index, r.prompt) for r in partition.rows] == [(0, "p0"), (1, "first")]
    assert partition.rejected == [(2, "a", "duplicate id 'a' (first at row 1)")]


def test_id_taken_by_an_earlier_partition_is_rejected(tmp_path: Path) -> None:
    path = write_partition(tmp_path / "p.parquet", ROWS)
    partition = read_partition(path, taken_ids=frozenset({"b", "unrelated"}))
    assert [r.id for r in partition.rows] == ["a"]
    assert partition.rejected == [(1, "b", "duplicate id 'b' (used by an earlier partition)")]


def test_nul_byte_in_prompt_is_rejected(tmp_path: Path) -> None:
    path = write_partition(tmp_path / "p.parquet", [{"id": "a", "prompt": "bad\x00prompt"}, ROWS[1]])
    assert rejected_reasons(path) == {0: "prompt contains NUL bytes"}


def test_large_string_columns_are_accepted(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.large_string()), ("prompt", pa.large_string())])
    path = write_partition(tmp_path / "p.parquet", ROWS, schema=schema)
    assert [r.id for r in read_partition(path).rows] == ["a", "b"]


@pytest.mark.parametrize("missing", ["id", "prompt"])
def test_missing_column_names_the_file(tmp_path: Path, missing: str) -> None:
    rows = [{k: v for k, v in row.items() if k != missing} | {"other": "x"} for row in ROWS]
    path = write_partition(tmp_path / "p.parquet", rows)
    with pytest.raises(InputError, match=f"missing required column '{missing}'") as info:
        read_partition(path)
    assert info.value.path == str(path)


def test_non_string_prompt_column_names_the_file(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("prompt", pa.int64())])
    path = write_partition(tmp_path / "p.parquet", [{"id": "a", "prompt": 1}], schema=schema)
    with pytest.raises(InputError, match="column 'prompt' must be string, found int64") as info:
        read_partition(path)
    assert info.value.path == str(path)


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(os.urandom(512))
    with pytest.raises(InputError, match="not a readable Parquet file") as info:
        read_partition(path)
    assert info.value.path == str(path)


# --- earlier_ids ----------------------------------------------------------------------------------


def test_earlier_ids_gives_each_partition_the_ids_before_it(tmp_path: Path) -> None:
    p1 = write_partition(tmp_path / "1.parquet", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "x"}])
    p2 = write_partition(tmp_path / "2.parquet", [{"id": "c", "prompt": "x"}, {"id": None, "prompt": "x"}])
    p3 = write_partition(tmp_path / "3.parquet", [{"id": "a", "prompt": "x"}])
    assert earlier_ids([p1, p2, p3]) == {p1: frozenset(), p2: {"a", "b"}, p3: {"a", "b", "c"}}


def test_earlier_ids_skips_unreadable_partitions(tmp_path: Path) -> None:
    p1 = tmp_path / "1.parquet"
    p1.write_bytes(b"not parquet")
    p2 = write_partition(tmp_path / "2.parquet", [{"prompt": "no id column"}])
    p3 = write_partition(tmp_path / "3.parquet", ROWS)
    assert earlier_ids([p1, p2, p3]) == {p1: frozenset(), p2: frozenset(), p3: frozenset()}


# --- fingerprints and atomic writes ---------------------------------------------------------------


def test_fingerprint_depends_on_content_not_path(tmp_path: Path) -> None:
    original = write_partition(tmp_path / "a.parquet", ROWS)
    copy = tmp_path / "elsewhere" / "renamed.parquet"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    assert fingerprint_file(copy) == fingerprint_file(original)
    changed = write_partition(tmp_path / "c.parquet", [ROWS[0], {"id": "b", "prompt": "worlD"}])
    assert fingerprint_file(changed) != fingerprint_file(original)


def test_write_atomic_writes_records_fingerprint_and_leaves_no_temp(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "p.parquet"
    table = pa.Table.from_pylist(ROWS)
    write_atomic(table, destination, {"fingerprint": "abc123", "policies": "sha256:x"})
    assert sorted(p.name for p in destination.parent.iterdir()) == ["p.parquet"]
    assert pq.read_table(destination).to_pylist() == ROWS
    assert stored_fingerprint(destination) == "abc123"


def test_stored_fingerprint_absent_or_unreadable_is_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    write_atomic(pa.Table.from_pylist(ROWS), plain)
    assert stored_fingerprint(plain) is None
    assert stored_fingerprint(write_partition(tmp_path / "w.parquet", ROWS)) is None
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"garbage")
    assert stored_fingerprint(garbage) is None
    assert stored_fingerprint(tmp_path / "missing.parquet") is None


def test_write_atomic_replaces_an_existing_file(tmp_path: Path) -> None:
    destination = write_partition(tmp_path / "p.parquet", ROWS)
    write_atomic(pa.Table.from_pylist(ROWS[:1]), destination, {"fingerprint": "new"})
    assert pq.read_table(destination).to_pylist() == ROWS[:1]
    assert stored_fingerprint(destination) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]


def test_failed_write_keeps_the_destination_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = tmp_path / "p.parquet"
    write_atomic(pa.Table.from_pylist(ROWS), destination, {"fingerprint": "old"})
    before = destination.read_bytes()

    def broken_write(table: pa.Table, where: str, **kwargs: object) -> None:
        Path(where).write_bytes(b"partial")  # a crash after some bytes reached the temp file
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(pa.Table.from_pylist(ROWS[:1]), destination, {"fingerprint": "new"})
    assert destination.read_bytes() == before
    assert stored_fingerprint(destination) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]
