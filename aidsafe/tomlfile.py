"""A TOML file read into its pydantic schema, every problem a PolicyError naming the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from aidsafe.errors import PolicyError

M = TypeVar("M", bound=BaseModel)


def read_model(path: Path, schema: type[M], what: str) -> M:
    """The file validated against schema; unreadable: "cannot read the {what}", invalid: the fields."""
    try:
        return schema.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(path, f"cannot read the {what}: {exc}") from exc
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PolicyError(path, reasons) from None
