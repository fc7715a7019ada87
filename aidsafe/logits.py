"""Token-level access to a local model: the next-token log-probabilities of several contexts, side by side.

Contrastive decoding (aidsafe.contrastive) needs, at every step, the distribution of the next token under
two contexts that share the rationale written so far. A `LogitModel` opens a `LogitSession` over some
contexts (token lists); the session holds each context's cache (KV cache), so that appending one token to
every context costs one token of evaluation per context, never the whole prefix again.

Two implementations: aidsafe.logits_llama (llama.cpp in-process, llama-cpp-python's low-level API, a GGUF
file: the embedded model by default) and aidsafe.logits_hf (a transformers checkpoint directory, CPU or GPU).
`load_logit_model` picks one by backend name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Backend = Literal["llama", "transformers"]
LogProbs = npt.NDArray[np.float32]  # one context's next-token log-probabilities, shape (vocab_size,)


class LogitSession(Protocol):
    """Contexts being extended token by token; `logprobs[i]` is the next-token distribution of context i."""

    @property
    def logprobs(self) -> list[LogProbs]: ...

    def advance(self, tokens: Sequence[int]) -> None:
        """Append tokens[i] to context i (one token per context) and evaluate it."""
        ...

    def close(self) -> None:
        """Free the session's caches (a model may keep a shared prefix for the next session)."""
        ...


class LogitModel(Protocol):
    """A local model with logit access."""

    @property
    def name(self) -> str: ...

    @property
    def end_tokens(self) -> frozenset[int]:
        """Tokens that end a generation (EOS, end of turn)."""
        ...

    @property
    def context_size(self) -> int: ...

    def tokenize(self, text: str) -> list[int]:
        """Plain text to tokens: no BOS, no special tokens parsed (a prompt file is text)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def open(self, contexts: Sequence[Sequence[int]]) -> LogitSession:
        """Evaluate every context (each at least one token) and hold their caches for `advance`."""
        ...


def log_softmax(logits: npt.NDArray[np.floating]) -> LogProbs:
    """Log-probabilities from raw logits, computed in float64 and returned as float32."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max()
    return (shifted - np.log(np.exp(shifted).sum())).astype(np.float32)


def common_prefix(contexts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every context shares."""
    if not contexts:
        return 0
    shortest = min(len(c) for c in contexts)
    for position in range(shortest):
        token = contexts[0][position]
        if any(c[position] != token for c in contexts[1:]):
            return position
    return shortest


def load_logit_model(backend: Backend, path: Path, threads: int | None = None) -> LogitModel:
    """A logit model: `llama` reads a GGUF file, `transformers` a checkpoint directory."""
    if backend == "llama":
        from aidsafe.logits_llama import LlamaLogitModel

        return LlamaLogitModel(path, threads=threads)
    from aidsafe.logits_hf import HFLogitModel

    return HFLogitModel(path)
