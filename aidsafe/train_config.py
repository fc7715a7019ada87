"""The settings of `aidsafe train` and the base model it starts from (no torch needed to import this).

Defaults are for the CPU and a small model: LoRA (rank 16, alpha 2 x rank, every linear layer) rather than
full fine-tuning, since it keeps the optimizer state to a few MB instead of twice the model and moves the
model less far from its base; the learning rate then defaults to what each method usually needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
S = TypeVar("S", bound=BaseModel)
# (kind, lora) -> learning rate when none is given
DEFAULT_LEARNING_RATE = {("sft", True): 2e-4, ("sft", False): 2e-5, ("dpo", True): 5e-5, ("dpo", False): 1e-6}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class TrainSettings(BaseModel):
    """Everything that decides a training run besides its data and base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: float = Field(1.0, gt=0, description="passes over the train split")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; beats --epochs (none: by epochs)")
    learning_rate: float | None = Field(
        None, gt=0, description="peak learning rate, decayed linearly (none: LoRA 2e-4 SFT / 5e-5 DPO; "
        "full 2e-5 SFT / 1e-6 DPO)",
    )  # fmt: skip
    lora: bool = Field(
        True, description="train a LoRA adapter (merged into the saved model), else every weight"
    )
    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank r (alpha is 2r)")
    max_length: int = Field(1024, ge=16, le=1_000_000, description="tokens per example (longer: truncated)")
    seed: int = Field(0, ge=0, description="seed of the adapter's init, dropout and data order")
    device: Device = Field("auto", description="auto: cuda when available, else cpu")
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads of torch (none: one per core; on a machine other work "
        "keeps busy, fewer threads can be much faster)",
    )  # fmt: skip
    batch_size: int = Field(4, ge=1, le=4096, description="examples per optimizer step")
    checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: about a third less peak memory "
        "for about a fifth more time (off: fastest on the CPU)",
    )  # fmt: skip
    beta: float = Field(0.1, gt=0, description="DPO only: how far the model may move from its reference")

    def learning_rate_for(self, kind: str) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[(kind, self.lora)]


def train_settings(values: dict[str, Any]) -> TrainSettings:
    """Settings from option values (None: not given); a bad value is a ConfigError naming the option."""
    return from_options(TrainSettings, values)


def from_options(schema: type[S], values: dict[str, Any]) -> S:
    """A settings model from option values (None: not given); a bad value is a ConfigError naming the
    option (--name)."""
    try:
        return schema.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        reasons = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(reasons) from None


@dataclass(frozen=True)
class BaseModelInfo:
    """The model training starts from: a checkpoint directory, what it is, and a content hash."""

    path: Path  # a transformers checkpoint directory
    source: str  # what it was made from: the directory, or the embedded model's GGUF
    sha256: str  # of the weight files (the GGUF for the embedded model)


def weights_hash(files: list[Path]) -> str:
    """One content hash over weight files, in name order (names included, paths not)."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_base(path: Path) -> list[Path]:
    """The weight files of a local checkpoint directory (it must have config.json and weights)."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"--base {path}: not a transformers checkpoint directory (no config.json)")
    weights = [p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    if not weights:
        raise ConfigError(f"--base {path}: no weight files (*.safetensors, *.bin)")
    return weights


def checkpoint_base(path: Path) -> BaseModelInfo:
    """A local checkpoint directory as the base."""
    return BaseModelInfo(path.resolve(), str(path.resolve()), weights_hash(check_base(path)))


def embedded_base(cache_dir: Path) -> BaseModelInfo:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF into the cache on first use."""
    from aidsafe.config import EMBEDDED_MODEL_NAME
    from aidsafe.embedded import locate_model
    from aidsafe.hf import embedded_checkpoint

    gguf = locate_model()
    path = embedded_checkpoint(cache_dir, gguf)
    return BaseModelInfo(
        path, f"embedded {EMBEDDED_MODEL_NAME} (GGUF {gguf}, dequantised)", weights_hash([gguf])
    )
