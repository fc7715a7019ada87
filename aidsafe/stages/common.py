"""Small helpers shared by the stages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def as_list(value: Any) -> list[Any]:
    """A Parquet list value as a Python list (None as empty)."""
    return list(value) if value is not None else []
