"""A local transformers checkpoint as an eval target, answered in this process (CPU or GPU).

`aidsafe eval --target NAME=hf:PATH` evaluates a checkpoint directory (e.g. one `aidsafe train` wrote)
without a model server: the prompt goes through the checkpoint's own chat template and is answered by
greedy decoding (temperature 0) or sampling, up to the endpoint's max_tokens. A checkpoint is loaded once per
process and device, and one generation runs at a time on it (the partitions' rows and threads share it), in a
worker thread so the event loop keeps serving the other rows' calls (the judge's HTTP requests).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from aidsafe.config import Endpoint
from aidsafe.errors import ConfigError
from aidsafe.usage import Usage

T = TypeVar("T", bound=BaseModel)
Messages = list[tuple[str, str]]
ROLES = {"human": "user", "ai": "assistant", "system": "system"}


_LOADING = threading.Lock()  # one load at a time: transformers' loading is not thread-safe (meta tensors)


@functools.cache
def _load(path: Path, device: str) -> tuple[Any, Any, threading.Lock]:
    from aidsafe.hf import load_causal_lm

    model, tokenizer = load_causal_lm(path, device)
    return model, tokenizer, threading.Lock()


def _loaded(path: Path, device: str) -> tuple[Any, Any, threading.Lock]:
    """The checkpoint's model and tokenizer on the device (loaded once), with the lock its generations
    take."""
    with _LOADING:
        return _load(path, device)


def device() -> str:
    """cuda when a GPU is there, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(tokenizer: Any, messages: Messages, fork: str | None) -> dict[str, Any]:
    """The conversation through the chat template, ending with the generation prompt and the fork token."""
    import torch

    chat = [{"role": ROLES.get(role, role), "content": text} for role, text in messages]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    if fork is None:
        return dict(inputs)
    token = tokenizer.convert_tokens_to_ids(fork)
    if token is None or token == tokenizer.unk_token_id:
        raise ConfigError(f"the checkpoint has no forking token {fork}: not an SSFT checkpoint with it")
    ids = torch.cat([inputs["input_ids"], torch.tensor([[token]])], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def generate(
    path: Path, messages: Messages, max_tokens: int, temperature: float, fork: str | None = None
) -> tuple[str, Usage]:
    """One reply of the checkpoint to a conversation (after a forking token, if given), its token counts."""
    import torch

    model, tokenizer, lock = _loaded(path, device())
    inputs = {k: v.to(model.device) for k, v in _inputs(tokenizer, messages, fork).items()}
    sampling: dict[str, Any] = {"do_sample": temperature > 0}
    if temperature > 0:
        sampling["temperature"] = temperature
    with lock, torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    prompt_tokens = inputs["input_ids"].shape[1]
    reply = out[0][prompt_tokens:]
    text = tokenizer.decode(reply, skip_special_tokens=True).strip()
    return text, Usage(calls=1, input_tokens=int(prompt_tokens), output_tokens=int(reply.shape[0]))


class LocalRole:
    """A role answered by a local checkpoint: plain replies only (a target answers as a deployed model)."""

    def __init__(self, role: str, endpoint: Endpoint) -> None:
        if endpoint.local_path is None:
            raise ValueError(f"role {role}: not a local checkpoint")
        self.role = role
        self.model_name = endpoint.model
        self._path = endpoint.local_path
        self._max_tokens = endpoint.max_tokens
        self._temperature = endpoint.temperature

    async def text(self, messages: Messages, fork: str | None = None) -> tuple[str, Usage]:
        return await asyncio.to_thread(
            generate, self._path, messages, self._max_tokens, self._temperature, fork
        )

    async def call(self, schema: type[T], messages: Messages, check: Any = None) -> tuple[T, Usage]:
        raise ConfigError(
            f"role {self.role}: a local checkpoint ({self._path}) answers only as an eval target, "
            f"not with structured {schema.__name__} replies"
        )
