"""The input of `aidsafe train`: an export directory (`aidsafe export sft|dpo`), read and checked.

A split is `<split>.parquet` (preferred) or `<split>.jsonl`. SFT rows need `messages` (a user turn, the
assistant's answer last); they are given to TRL as conversational prompt-completion rows (every message but
the last, then the last), so the loss is on the assistant's answer only. DPO rows need `prompt`, `chosen`
and `rejected`, each a list of messages. Every problem names the file and the row (numbered from 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe.errors import InputError
from aidsafe.partitions import fingerprint_file
from aidsafe.records import read_records

Kind = Literal["sft", "dpo"]
COLUMNS: dict[str, tuple[str, ...]] = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected")}
OTHER = {"sft": "dpo", "dpo": "sft"}
ARTICLE = {"sft": "an SFT", "dpo": "a DPO"}


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    reasoning_content: str | None = None

    def plain(self) -> dict[str, str]:
        """As the chat template reads it (no null fields)."""
        return self.model_dump(exclude_none=True)


class SftRow(BaseModel):
    messages: list[Message] = Field(min_length=2)


class DpoRow(BaseModel):
    prompt: list[Message] = Field(min_length=1)
    chosen: list[Message] = Field(min_length=1)
    rejected: list[Message] = Field(min_length=1)


@dataclass(frozen=True)
class Split:
    """One split of an export: its file, content hash and rows in the trainer's format."""

    path: Path
    sha256: str
    rows: list[dict[str, Any]]

    @property
    def has_reasoning_field(self) -> bool:
        """Some assistant message carries its CoT in reasoning_content (an export with --cot field)."""
        return any("reasoning_content" in m for row in self.rows for turn in row.values() for m in turn)


@dataclass(frozen=True)
class ExportData:
    directory: Path
    kind: Kind
    train: Split
    validation: Split | None
    config: str | None  # the export card's config name (its kind and content hash), if it has a card


def split_file(directory: Path, split: str) -> Path | None:
    """The file of a split: Parquet if the export has it, else JSONL; None if the split is not there."""
    for suffix in ("parquet", "jsonl"):
        if (path := directory / f"{split}.{suffix}").is_file():
            return path
    return None


def _check_columns(path: Path, records: list[dict[str, Any]], kind: Kind) -> None:
    if not records:
        raise InputError(path, "no rows")
    columns = set(records[0])
    missing = [c for c in COLUMNS[kind] if c not in columns]
    if missing:
        other = OTHER[kind]
        hint = (
            f"; it looks like {ARTICLE[other]} export: `aidsafe train {other}`"
            if set(COLUMNS[other]) <= columns
            else ""
        )
        raise InputError(path, f"no {', '.join(missing)} column: not {ARTICLE[kind]} export{hint}")


def _trainer_row(row: SftRow | DpoRow, path: Path, number: int) -> dict[str, Any]:
    if isinstance(row, DpoRow):
        sides = {"prompt": row.prompt, "chosen": row.chosen, "rejected": row.rejected}
        return {name: [m.plain() for m in turn] for name, turn in sides.items()}
    *context, answer = row.messages
    if answer.role != "assistant" or not any(m.role == "user" for m in context):
        raise InputError(path, "messages must have a user turn and end with the assistant's answer", number)
    return {"prompt": [m.plain() for m in context], "completion": [answer.plain()]}


def check_rows(path: Path, records: list[dict[str, Any]], kind: Kind) -> list[dict[str, Any]]:
    """The rows in TRL's conversational format (SFT: prompt-completion); errors name the row."""
    _check_columns(path, records, kind)
    model: type[SftRow | DpoRow] = SftRow if kind == "sft" else DpoRow
    rows = []
    for number, record in enumerate(records, start=1):
        try:
            row = model.model_validate({c: record.get(c) for c in COLUMNS[kind]})
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise InputError(path, reasons, row=number) from None
        rows.append(_trainer_row(row, path, number))
    return rows


def read_split(directory: Path, split: str, kind: Kind) -> Split | None:
    path = split_file(directory, split)
    if path is None:
        return None
    return Split(path, fingerprint_file(path), check_rows(path, read_records(path), kind))


def _card_config(directory: Path) -> str | None:
    card = directory / "README.md"
    found = re.search(r"^- config_name: (\S+)$", card.read_text("utf-8"), re.M) if card.is_file() else None
    return found.group(1) if found else None


def load_export(directory: Path, kind: Kind) -> ExportData:
    """An export's train split (required) and validation split (if it has one), checked."""
    if not directory.is_dir():
        raise InputError(directory, f"export directory not found (make one with `aidsafe export {kind}`)")
    directory = directory.resolve()
    train = read_split(directory, "train", kind)
    if train is None:
        raise InputError(directory, "no train split (train.parquet or train.jsonl)")
    validation = read_split(directory, "validation", kind)
    return ExportData(directory, kind, train, validation, _card_config(directory))
