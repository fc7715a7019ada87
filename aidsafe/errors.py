"""The error model: every error aidsafe raises on purpose is an AidsafeError; the CLI edge (aidsafe.cli) turns
them into one `aidsafe: error: ...` line. A row fails only on a model, backend or input error (row_errors(),
wrapped as StageFailed); any other exception is a bug and fails its whole partition loudly.
"""

from __future__ import annotations

import functools
from pathlib import Path


class AidsafeError(Exception):
    """Base class of every error aidsafe raises on purpose; exit_code: what the CLI exits with (2: the user's
    input or options are wrong; 1: the run itself failed)."""

    exit_code = 2


class ConfigError(AidsafeError):
    """A configuration value or option is missing or invalid."""


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


class ModelError(AidsafeError):
    """A model call did not give a usable answer."""


class StructuredOutputError(ModelError):
    """A model kept returning output that does not validate against the expected schema."""


class EmbeddedServerError(AidsafeError):
    """The embedded llama.cpp server could not be found, started or reached."""


class StageFailed(AidsafeError):
    """A stage of one row failed after the model's retries; carries the stage name and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class TransientFailures(AidsafeError):
    """Rows of a partition failed on transient errors; the partition is written but not marked done."""


class Interrupted(AidsafeError):
    """The command was interrupted (Ctrl-C, SIGTERM): a partition stopped, its finished rows checkpointed."""

    exit_code = 130


class RunFailed(AidsafeError):
    """The run went through but did not do its job; everything it made is written (retry redoes the rest)."""

    exit_code = 1


class PartitionsFailed(RunFailed):
    """Some partitions of a stage could not be processed; the others finished."""


class TooManyFailedRows(RunFailed):
    """A stage's share of failed rows is above max_failed_fraction."""


class StagesFailed(RunFailed):
    """Some stages of a pipeline run failed (their other partitions finished and were carried on)."""


class MissingInput(AidsafeError):
    """A stage's input has not been made yet: the stage that makes it must run first."""

    def __init__(self, path: Path, made_by: str, needed_by: str) -> None:
        super().__init__(f"{path}: not found; run `aidsafe {made_by}` before `aidsafe {needed_by}`")


@functools.cache
def row_errors() -> tuple[type[BaseException], ...]:
    """What a row may fail on: the backend (HTTP status, connection, timeout) or a model's unusable answer.

    (A function, so that the CLI can report a bad option without importing the HTTP clients first.)
    """
    import httpx
    import openai

    return (openai.APIError, httpx.HTTPError, ModelError, TimeoutError, ConnectionError)


@functools.cache
def _transient() -> tuple[type[BaseException], ...]:
    import httpx
    import openai

    return (
        openai.APIConnectionError,  # includes APITimeoutError
        openai.RateLimitError,
        openai.InternalServerError,
        httpx.TransportError,
        TimeoutError,
        ConnectionError,
        TransientFailures,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether an error (or the cause of a failed row) may go away on its own: connection trouble, timeouts,
    429 and 5xx, worth retrying later."""
    cause = exc.cause if isinstance(exc, StageFailed) else exc
    return isinstance(cause, _transient())


class AnswerMissing(AidsafeError):
    """A row has no answer for the rationales stage to explain (or none to contrast it with)."""
