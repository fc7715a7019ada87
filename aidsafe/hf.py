"""Local transformers models: a checkpoint directory, or the embedded SmolLM2-135M converted from its GGUF.

transformers reads GGUF files (with the `gguf` package) and dequantises them into a trainable torch model.
That takes about half a minute, so the embedded model is converted once into a checkpoint directory under the
cache (~/.cache/aidsafe/models/, or AIDSAFE_CACHE through aidsafe.config) and loaded from there afterwards.
Nothing is downloaded: every path here is local.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aidsafe.errors import ConfigError

EMBEDDED_CHECKPOINT = "smollm2-135m-instruct"


def _offline() -> None:
    """No hub access, ever: every model is a local path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def convert_gguf(gguf: Path, destination: Path) -> Path:
    """Dequantise a GGUF model into a transformers checkpoint directory (written atomically)."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(_plain_config(loaded.config), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # the dequantised weights, in a model not marked "quantised"
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if destination.exists():  # another process converted it meanwhile
            shutil.rmtree(tmp)
        else:
            tmp.rename(destination)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return destination


def _plain_config(config: Any) -> Any:
    plain = type(config).from_dict(config.to_dict())
    if hasattr(plain, "quantization_config"):
        del plain.quantization_config
    return plain


def embedded_checkpoint(cache: Path, gguf: Path) -> Path:
    """The embedded model as a transformers checkpoint directory, converted from its GGUF on first use."""
    target = cache / "models" / EMBEDDED_CHECKPOINT
    if (target / "config.json").is_file():
        return target
    return convert_gguf(gguf, target)


def load_causal_lm(path: Path, device: str = "cpu") -> tuple[Any, Any]:
    """A local checkpoint directory: (model, tokenizer), the model in float32 on the device, in eval mode.

    Typed Any: transformers' own annotations do not type-check ordinary use (apply_chat_template, generate).
    """
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a transformers checkpoint directory (no config.json)")
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a command's output
    tokenizer = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
