"""The teacher of the rationales stage: its logit model, prompt file and decoding settings, from the settings.

The one place that builds a LogitModel (aidsafe.logits): stages never construct models. A model is loaded
once per process and backend/path and shared by the partitions of a run; `TEACHER_LOCK` lets one rationale
be decoded at a time (a llama.cpp context is not thread-safe; two decodes on one CPU only slow each other).
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from aidsafe.config import Settings
from aidsafe.contrastive import DecodeSettings
from aidsafe.embedded import locate_model
from aidsafe.errors import ConfigError
from aidsafe.logits import LogitModel, load_logit_model
from aidsafe.rationale_prompt import FILE_NAME, RationalePrompt, load_rationale_prompt

TEACHER_LOCK = threading.Lock()
_LOADING = threading.Lock()


def rationale_prompt_path(settings: Settings) -> Path:
    return settings.prompts_dir / FILE_NAME


@cache
def _prompt(path: Path, mtime: float) -> RationalePrompt:
    return load_rationale_prompt(path)


def rationale_prompt(settings: Settings) -> RationalePrompt:
    """The teacher's prompt file, validated (PolicyError naming it); read again when it changes."""
    path = rationale_prompt_path(settings)
    return _prompt(path, path.stat().st_mtime if path.is_file() else 0.0)


def teacher_path(settings: Settings) -> Path:
    """The teacher's file or directory: as configured, or the embedded model for the backend."""
    if settings.rationale_model is not None:
        return settings.rationale_model
    gguf = locate_model(settings.embedded.model_path)
    if settings.rationale_backend == "llama":
        return gguf
    from aidsafe.hf import embedded_checkpoint

    return embedded_checkpoint(settings.cache_dir, gguf)


@cache
def _load(backend: str, path: Path, threads: int | None) -> LogitModel:
    return load_logit_model("llama" if backend == "llama" else "transformers", path, threads)


def teacher(settings: Settings) -> LogitModel:
    """The teacher model, loaded on first use (ConfigError when the file or directory is unusable)."""
    with _LOADING:
        return _load(settings.rationale_backend, teacher_path(settings), settings.embedded.threads)


def decode_settings(settings: Settings, stop: list[str]) -> DecodeSettings:
    """The decoding knobs as DecodeSettings (ConfigError naming the option when they do not fit together)."""
    try:
        return DecodeSettings(
            mode=settings.rationale_decoding,
            weight=settings.rationale_weight,
            plausible=settings.rationale_plausible,
            plausible_value=settings.rationale_plausible_value,
            max_tokens=settings.rationale_max_tokens,
            stop=tuple(stop),
        )
    except ValueError as exc:
        raise ConfigError(f"--plausible {settings.rationale_plausible}: {exc}") from None


def check_teacher(settings: Settings) -> None:
    """Before a flow starts: the prompt file, the decoding settings and the teacher's path."""
    prompt = rationale_prompt(settings)
    decode_settings(settings, prompt.stop)
    path = teacher_path(settings)
    if settings.rationale_backend == "llama" and not path.is_file():
        raise ConfigError(f"--teacher {path}: no such GGUF file")
    if settings.rationale_backend == "transformers" and not (path / "config.json").is_file():
        raise ConfigError(f"--teacher {path}: not a transformers checkpoint directory (no config.json)")
