"""The input of `aidsafe train ssft`: a set export directory (`aidsafe export sets`), read and checked.

A split is `<split>.parquet` (preferred) or `<split>.jsonl`: train (required), validation and test
(optional). Each row is one prompt with its set of traces: `id`, `prompt` (the user message), `traces` (a list
of at least one `{"cot", "response", "configuration", "scores": {metric: int}}`, unordered), `traces_count`
and `diversity` (a float or null). Every problem names the file and the row (numbered from 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aidsafe.errors import InputError
from aidsafe.partitions import fingerprint_file
from aidsafe.records import read_records
from aidsafe.train_data import _card_config, split_file

COLUMNS = ("id", "prompt", "traces", "traces_count", "diversity")
SPLITS = ("train", "validation", "test")
MAKE = "make one with `aidsafe export sets`"


class Trace(BaseModel):
    """One way of answering the prompt: its CoT, its response, the configuration that made it, its scores."""

    model_config = ConfigDict(frozen=True)

    cot: str
    response: str
    configuration: str
    scores: dict[str, int] = Field(default_factory=dict)

    @field_validator("scores", mode="before")
    @classmethod
    def _plain_scores(cls, value: Any) -> Any:
        """Parquet gives a map column as (key, value) pairs and a struct's missing metrics as null."""
        if isinstance(value, list):
            value = dict(value)
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value


class SetRow(BaseModel):
    """One prompt and its set of traces."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    traces: tuple[Trace, ...] = Field(min_length=1)
    traces_count: int = Field(ge=1)
    diversity: float | None = None


@dataclass(frozen=True)
class SetSplit:
    """One split of a set export: its file, content hash and rows."""

    path: Path
    sha256: str
    rows: list[SetRow]

    @property
    def traces(self) -> int:
        return sum(len(r.traces) for r in self.rows)


@dataclass(frozen=True)
class SetData:
    directory: Path
    train: SetSplit
    validation: SetSplit | None
    test: SetSplit | None
    config: str | None  # the export card's config name (sets-<hash>), if it has a card


def _check_columns(path: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        raise InputError(path, "no rows")
    columns = set(records[0])
    if "traces" not in columns:
        others = (("sft", "an SFT", "messages"), ("dpo", "a DPO", "chosen"))
        hint = next(
            (f"; it looks like {a} export: `aidsafe train {k}`" for k, a, c in others if c in columns), ""
        )
        raise InputError(path, f"no traces column: not a set export ({MAKE}){hint}")
    missing = [c for c in COLUMNS if c not in columns and c != "diversity"]
    if missing:
        raise InputError(path, f"no {', '.join(missing)} column: not a set export ({MAKE})")


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())


def check_rows(path: Path, records: list[dict[str, Any]]) -> list[SetRow]:
    """The rows of a split file, validated; an error names the file and the row (from 1)."""
    _check_columns(path, records)
    rows, seen = [], set()
    for number, record in enumerate(records, start=1):
        try:
            row = SetRow.model_validate({c: record.get(c) for c in COLUMNS})
        except ValidationError as exc:
            raise InputError(path, _reasons(exc), row=number) from None
        if row.id in seen:
            raise InputError(path, f"id {row.id!r} is on an earlier row too", row=number)
        seen.add(row.id)
        rows.append(row)
    return rows


def read_split(directory: Path, split: str) -> SetSplit | None:
    path = split_file(directory, split)
    if path is None:
        return None
    return SetSplit(path, fingerprint_file(path), check_rows(path, read_records(path)))


def load_sets(directory: Path) -> SetData:
    """A set export's train split (required), validation and test splits (if it has them), checked."""
    if not directory.is_dir():
        raise InputError(directory, f"set export directory not found ({MAKE})")
    directory = directory.resolve()
    train = read_split(directory, "train")
    if train is None:
        raise InputError(directory, "no train split (train.parquet or train.jsonl)")
    validation, test = read_split(directory, "validation"), read_split(directory, "test")
    return SetData(directory, train, validation, test, _card_config(directory))
