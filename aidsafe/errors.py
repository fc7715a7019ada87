"""Small domain exceptions. They become user messages only at the CLI edge (aidsafe.cli)."""

from __future__ import annotations

from pathlib import Path


class AidsafeError(Exception):
    """Base class of every error aidsafe raises on purpose."""


class ConfigError(AidsafeError):
    """A configuration value is missing or invalid."""


class PolicyError(AidsafeError):
    """A policy or prompt file is malformed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InputError(AidsafeError):
    """An input partition (or one of its rows) is unusable."""

    def __init__(self, path: Path | str, reason: str, row: int | None = None) -> None:
        where = f"{path}" if row is None else f"{path} row {row}"
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.row = row
        self.reason = reason


class StructuredOutputError(AidsafeError):
    """A model kept returning output that does not validate against the expected schema."""


class EmbeddedServerError(AidsafeError):
    """The embedded llama.cpp server could not be found, started or reached."""


class StageFailed(Exception):
    """A stage of one row failed after the model's retries; carries the stage name and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause
