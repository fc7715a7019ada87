"""A transformers checkpoint directory (CPU or GPU): aidsafe.logits' LogitModel.

Every context of a session has its own `DynamicCache`: the contexts' common prefix is evaluated once and its
cache deep-copied for each context, then each context's own tokens are evaluated; `advance` feeds one token
per context with its cache. The prefix cache is kept by the model: the next session's contexts that start
with the same tokens (a few-shot prompt repeats) evaluate only the rest.

Sessions are independent (each owns its caches), so several may be open at once; opening them is
serialised by a lock, as the kept prefix cache is shared.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aidsafe.errors import ModelError
from aidsafe.hf import load_causal_lm
from aidsafe.logits import LogProbs, common_prefix, log_softmax

END_OF_TURN = "<|im_end|>"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFLogitModel:
    """A transformers causal LM from a local checkpoint directory (float32, eval mode)."""

    def __init__(self, path: Path, device: str | None = None) -> None:
        self._path = path
        self._device = device or default_device()
        self._model, self._tokenizer = load_causal_lm(path, self._device)
        forward = inspect.signature(self._model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"  # renamed in transformers 5.2x
        self._n_vocab = int(self._model.get_output_embeddings().weight.shape[0])
        self._end = self._end_tokens(self._tokenizer)
        self._context_size = int(getattr(self._model.config, "max_position_embeddings", 2048))
        self._lock = threading.Lock()
        self._prefix: list[int] = []  # the tokens of the kept prefix cache
        self._prefix_cache: Any = None

    @staticmethod
    def _end_tokens(tokenizer: Any) -> frozenset[int]:
        ends = set() if tokenizer.eos_token_id is None else {int(tokenizer.eos_token_id)}
        if END_OF_TURN in tokenizer.get_vocab():
            ends.add(int(tokenizer.convert_tokens_to_ids(END_OF_TURN)))
        return frozenset(ends)

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def end_tokens(self) -> frozenset[int]:
        return self._end

    @property
    def context_size(self) -> int:
        return self._context_size

    def tokenize(self, text: str) -> list[int]:
        encoded = self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [int(t) for t in encoded]  # special tokens as text, like llama.cpp's parse_special=False

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._check_tokens(tokens)
        text: str = self._tokenizer.decode(
            list(tokens), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return text

    def _check_tokens(self, tokens: Sequence[int]) -> None:
        bad = [t for t in tokens if not 0 <= t < self._n_vocab]
        if bad:
            raise ModelError(f"{self.name}: tokens outside the vocabulary of {self._n_vocab}: {bad[:5]}")

    def _check(self, contexts: Sequence[Sequence[int]]) -> None:
        if not contexts:
            raise ModelError(f"{self.name}: a session needs at least one context")
        for context in contexts:
            if not context:
                raise ModelError(f"{self.name}: an empty context (each needs at least one token)")
            if len(context) > self._context_size:
                raise ModelError(
                    f"{self.name}: a context of {len(context)} tokens exceeds the context size "
                    f"{self._context_size}"
                )
            self._check_tokens(context)

    def forward(self, tokens: Sequence[int], cache: Any) -> LogProbs:
        """Append tokens to a cache; the next-token log-probabilities after the last one."""
        import torch

        with torch.no_grad():
            ids = torch.tensor([list(tokens)], dtype=torch.long, device=self._device)
            arguments = {self._cache_arg: cache, "use_cache": True, "logits_to_keep": 1}
            out = self._model(input_ids=ids, **arguments)
            logits = out.logits[0, -1].float().cpu().numpy()
        return log_softmax(logits)

    def _extend(self, cache: Any, tokens: Sequence[int]) -> None:
        if tokens:
            self.forward(tokens, cache)

    def _prefix_for(self, tokens: Sequence[int]) -> Any:
        """The kept prefix cache made to hold exactly `tokens` (kept part cropped, the rest evaluated)."""
        from transformers import DynamicCache

        kept = common_prefix([self._prefix, tokens])
        if kept == 0 or self._prefix_cache is None:
            self._prefix_cache, kept = DynamicCache(config=self._model.config), 0
        elif kept < len(self._prefix):
            self._prefix_cache.crop(kept - len(self._prefix))  # a negative count: the tokens to drop
        self._prefix = []  # until the cache holds `tokens` (an exception leaves no stale claim)
        self._extend(self._prefix_cache, tokens[kept:])
        self._prefix = list(tokens)
        return self._prefix_cache

    def open(self, contexts: Sequence[Sequence[int]]) -> _HFSession:
        self._check(contexts)
        shared = min(common_prefix(contexts), *(len(c) - 1 for c in contexts))
        with self._lock:
            prefix = self._prefix_for(contexts[0][:shared])
            caches = [copy.deepcopy(prefix) for _ in contexts]
        logprobs = [self.forward(c[shared:], cache) for c, cache in zip(contexts, caches, strict=True)]
        return _HFSession(self, caches, logprobs, [len(c) for c in contexts])

    def close(self) -> None:
        """Drop the kept prefix cache (the weights go with the object)."""
        with self._lock:
            self._prefix, self._prefix_cache = [], None

    def __enter__(self) -> HFLogitModel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class _HFSession:
    """The open contexts of an HFLogitModel, one DynamicCache each."""

    def __init__(
        self, model: HFLogitModel, caches: list[Any], logprobs: list[LogProbs], lengths: list[int]
    ) -> None:
        self._model = model
        self._caches: list[Any] | None = caches
        self._logprobs = logprobs
        self.lengths = lengths

    @property
    def logprobs(self) -> list[LogProbs]:
        return list(self._logprobs)

    def advance(self, tokens: Sequence[int]) -> None:
        if self._caches is None:
            raise ModelError(f"{self._model.name}: the session is closed")
        if len(tokens) != len(self._caches):
            raise ModelError(f"{len(tokens)} tokens to advance {len(self._caches)} contexts")
        if max(self.lengths) >= self._model.context_size:
            raise ModelError(f"{self._model.name}: a context would exceed the context size")
        self._model._check_tokens(tokens)
        self._logprobs = [self._model.forward([t], c) for t, c in zip(tokens, self._caches, strict=True)]
        self.lengths = [n + 1 for n in self.lengths]

    def close(self) -> None:
        self._caches = None

    def __enter__(self) -> _HFSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
