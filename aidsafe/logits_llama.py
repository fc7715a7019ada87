"""A GGUF model in process through llama.cpp (llama-cpp-python's low-level API): aidsafe.logits' LogitModel.

Every context of a session is a sequence of ONE unified KV cache (llama.cpp's kv_unified): the contexts'
common prefix is evaluated once on sequence 0 and shared with the others by `llama_memory_seq_cp` (the
cells are shared, not copied), then each context's own tokens are evaluated, all sequences packed into the
same batches. `advance` appends one token to every sequence in one `llama_decode` call.

The model remembers which tokens each sequence holds when a session closes: the next session keeps the part
of every sequence its contexts start with (a few-shot prompt repeats) and evaluates only the rest. The cache
has room for `n_ctx` tokens in every sequence, so a session never runs out of cells as long as each
context stays within `n_ctx` (a longer one is a ModelError).

One session at a time per model: `open` waits for another thread's session to close, and closes the
calling thread's own open session first. llama.cpp's log output is silenced for the whole process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import llama_cpp.llama_cpp as llama
import numpy as np

from aidsafe.errors import ConfigError, ModelError
from aidsafe.logits import LogProbs, common_prefix, log_softmax

BATCH = 512  # tokens per llama_decode call when evaluating contexts (llama.cpp's n_batch and n_ubatch)
SEQUENCES = 4  # contexts a session may hold (llama.cpp's n_seq_max)


def _ignore_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


_NO_LOG = llama.llama_log_callback(_ignore_log)  # a module global: llama.cpp keeps the pointer


@functools.cache
def _init_backend() -> None:
    """Silence llama.cpp (and ggml) logging for the process, then initialise the backend once."""
    llama.llama_log_set(_NO_LOG, ctypes.c_void_p(0))
    llama.llama_backend_init()


def _load_model(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found")
    _init_backend()
    params = llama.llama_model_default_params()
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ConfigError(f"{path}: llama.cpp could not load the model (not a GGUF model file?)")
    return model


def _new_context(model: Any, cells: int, sequences: int, threads: int | None) -> Any:
    params = llama.llama_context_default_params()
    params.n_ctx = cells
    params.n_batch = params.n_ubatch = BATCH
    params.n_seq_max = sequences
    params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
    params.kv_unified = True  # sequences share the cells of their common prefix
    params.no_perf = True
    return llama.llama_init_from_model(model, params)


def _matching(cached: Sequence[int], context: Sequence[int]) -> int:
    """How many leading tokens two token lists share."""
    return common_prefix([cached, context])


class _Batch:
    """A llama_batch of up to `capacity` tokens, each of one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.struct = llama.llama_batch_init(capacity, 0, 1)
        self.size = 0

    def add(self, token: int, position: int, seq: int, logits: bool) -> None:
        b, i = self.struct, self.size
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, position, 1, logits
        b.seq_id[i][0] = seq
        self.size = b.n_tokens = i + 1

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def clear(self) -> None:
        self.size = self.struct.n_tokens = 0

    def free(self) -> None:
        llama.llama_batch_free(self.struct)


class _Engine:
    """A llama.cpp context: its KV cache's sequences, the tokens each holds, and their evaluation."""

    def __init__(self, model: Any, path: Path, n_ctx: int, sequences: int, threads: int | None) -> None:
        self.model = model
        self.context = _new_context(model, n_ctx * sequences, sequences, threads)
        if not self.context:
            raise ConfigError(f"{path}: llama.cpp could not create a context of {n_ctx}×{sequences} tokens")
        self.vocab = llama.llama_model_get_vocab(model)
        self.n_vocab: int = llama.llama_vocab_n_tokens(self.vocab)
        self.memory = llama.llama_get_memory(self.context)
        self.batch = _Batch(BATCH)
        self.cached: list[list[int]] = [[] for _ in range(sequences)]

    def keep(self, seq: int, context: Sequence[int]) -> int:
        """Keep the part of the sequence the context starts with (never its last token: its logits are
        needed) and drop the rest; how many tokens are kept."""
        kept = min(_matching(self.cached[seq], context), len(context) - 1)
        llama.llama_memory_seq_rm(self.memory, seq, kept, -1)
        del self.cached[seq][kept:]
        return kept

    def drop_others(self) -> None:
        """Empty every sequence but 0. Measured: evaluating sequence 0 while another sequence still held
        cells of an earlier session gave log-probs up to 0.65 nats off a fresh evaluation (llama-cpp-python
        0.3.36, unified cache); with the others emptied first they are exact. Sequence 0 holds the few-shot
        prefix the next session shares, which is what saves the evaluation."""
        for seq in range(1, len(self.cached)):
            llama.llama_memory_seq_rm(self.memory, seq, -1, -1)
            self.cached[seq] = []

    def share(self, source: int, target: int, length: int) -> None:
        """Make the target sequence the source's first `length` tokens (shared cells, no evaluation)."""
        llama.llama_memory_seq_rm(self.memory, target, -1, -1)
        llama.llama_memory_seq_cp(self.memory, source, target, 0, length)
        self.cached[target] = self.cached[source][:length]

    def evaluate(self, work: Sequence[tuple[int, Sequence[int]]], logits: bool) -> dict[int, LogProbs]:
        """Append tokens to sequences (seq, tokens) and evaluate them in as few batches as fit; with
        `logits`, the next-token log-probabilities after each sequence's last token, by sequence."""
        out: dict[int, LogProbs] = {}
        wanted: list[tuple[int, int]] = []  # (seq, index in the batch) of the logits to read
        self.batch.clear()
        for seq, tokens in work:
            start = len(self.cached[seq])
            for offset, token in enumerate(tokens):
                last = logits and offset == len(tokens) - 1
                if last:
                    wanted.append((seq, self.batch.size))
                self.batch.add(token, start + offset, seq, last)
                if self.batch.full:
                    self._decode(wanted, out)
            self.cached[seq].extend(tokens)
        if self.batch.size:
            self._decode(wanted, out)
        return out

    def _decode(self, wanted: list[tuple[int, int]], out: dict[int, LogProbs]) -> None:
        code = llama.llama_decode(self.context, self.batch.struct)
        self.batch.clear()
        if code != 0:
            self.reset()
            raise ModelError(f"llama_decode failed with code {code}")
        for seq, index in wanted:
            out[seq] = self._logprobs(index)
        wanted.clear()

    def _logprobs(self, index: int) -> LogProbs:
        pointer = llama.llama_get_logits_ith(self.context, index)
        if not pointer:
            raise ModelError(f"llama.cpp returned no logits for batch position {index}")
        return log_softmax(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))  # copies (float64)

    def reset(self) -> None:
        """Forget every sequence (after a failed decode the cache's state is unknown)."""
        llama.llama_memory_clear(self.memory, True)
        self.cached = [[] for _ in self.cached]

    def free(self) -> None:
        self.batch.free()
        llama.llama_free(self.context)
        llama.llama_model_free(self.model)


class LlamaLogitModel:
    """A GGUF model through llama.cpp; `n_ctx`: the most tokens one context may reach; `sequences`: the
    most contexts of one session."""

    def __init__(
        self, path: Path, threads: int | None = None, n_ctx: int = 2048, sequences: int = SEQUENCES
    ) -> None:
        self._path = path
        self._n_ctx = n_ctx
        model = _load_model(path)
        try:
            self._engine: _Engine | None = _Engine(model, path, n_ctx, sequences, threads)
        except BaseException:
            llama.llama_model_free(model)
            raise
        self._sequences = sequences
        self._end = self._end_tokens(self._engine.vocab)
        self._lock = threading.Lock()
        self._active: _LlamaSession | None = None
        self._owner: int | None = None  # the thread of the open session

    @staticmethod
    def _end_tokens(vocab: Any) -> frozenset[int]:
        ends = (llama.llama_vocab_eos(vocab), llama.llama_vocab_eot(vocab))
        return frozenset(int(t) for t in ends if t >= 0)

    @property
    def name(self) -> str:
        return self._path.stem

    @property
    def end_tokens(self) -> frozenset[int]:
        return self._end

    @property
    def context_size(self) -> int:
        return self._n_ctx

    def _live(self) -> _Engine:
        if self._engine is None:
            raise ModelError(f"{self.name}: the model is closed")
        return self._engine

    def tokenize(self, text: str) -> list[int]:
        vocab, data = self._live().vocab, text.encode("utf-8")
        size = len(data) + 1
        while True:
            buffer = (llama.llama_token * size)()
            count = llama.llama_tokenize(vocab, data, len(data), buffer, size, False, False)
            if count >= 0:
                return list(buffer[:count])
            size = -count

    def detokenize(self, tokens: Sequence[int]) -> str:
        engine = self._live()
        self._check_tokens(tokens, engine.n_vocab)
        return b"".join(self._piece(engine.vocab, t) for t in tokens).decode("utf-8", errors="replace")

    @staticmethod
    def _piece(vocab: Any, token: int) -> bytes:
        size = 32
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama.llama_token_to_piece(vocab, token, buffer, size, 0, True)
            if length >= 0:
                return buffer.raw[:length]
            size = -length

    def _check_tokens(self, tokens: Sequence[int], n_vocab: int) -> None:
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            raise ModelError(f"{self.name}: tokens outside the vocabulary of {n_vocab}: {bad[:5]}")

    def _check(self, contexts: Sequence[Sequence[int]], engine: _Engine) -> None:
        if not 1 <= len(contexts) <= self._sequences:
            raise ModelError(f"{self.name}: {len(contexts)} contexts; a session holds 1 to {self._sequences}")
        for context in contexts:
            if not context:
                raise ModelError(f"{self.name}: an empty context (each needs at least one token)")
            if len(context) > self._n_ctx:
                raise ModelError(
                    f"{self.name}: a context of {len(context)} tokens exceeds the context size {self._n_ctx}"
                )
            self._check_tokens(context, engine.n_vocab)

    def open(self, contexts: Sequence[Sequence[int]]) -> _LlamaSession:
        self._claim()
        try:
            engine = self._live()
            self._check(contexts, engine)
            logprobs = self._prepare(engine, contexts)
        except BaseException:
            self._unclaim()
            raise
        self._active = _LlamaSession(self, [len(c) for c in contexts], logprobs)
        return self._active

    def _prepare(self, engine: _Engine, contexts: Sequence[Sequence[int]]) -> list[LogProbs]:
        """Evaluate the common prefix once (on sequence 0), share it, then every context's own tokens."""
        shared = min(common_prefix(contexts), *(len(c) - 1 for c in contexts))
        engine.drop_others()  # only sequence 0 keeps a prefix across sessions (see _Engine.drop_others)
        first = engine.keep(0, contexts[0])
        if first < shared:
            engine.evaluate([(0, contexts[0][first:shared])], logits=False)
        starts = [max(first, shared)]
        for seq in range(1, len(contexts)):
            engine.share(0, seq, shared)
            starts.append(shared)
        work = [(seq, c[start:]) for seq, (c, start) in enumerate(zip(contexts, starts, strict=True))]
        out = engine.evaluate(work, logits=True)
        return [out[seq] for seq in range(len(contexts))]

    def _step(self, session: _LlamaSession, tokens: Sequence[int]) -> list[LogProbs]:
        """One token more in every sequence of the session: one llama_decode call."""
        if self._active is not session:
            raise ModelError(f"{self.name}: the session is closed")
        engine = self._live()
        if len(tokens) != len(session.lengths):
            raise ModelError(f"{len(tokens)} tokens to advance {len(session.lengths)} contexts")
        if max(session.lengths) >= self._n_ctx:
            raise ModelError(f"{self.name}: a context would exceed the context size {self._n_ctx}")
        self._check_tokens(tokens, engine.n_vocab)
        try:
            out = engine.evaluate([(seq, [t]) for seq, t in enumerate(tokens)], logits=True)
        except ModelError:
            session.close()  # the cache was reset: the session's contexts are gone
            raise
        return [out[seq] for seq in range(len(tokens))]

    def _claim(self) -> None:
        """Take the model for a session: the calling thread's own open session is closed first."""
        active = self._active
        if active is not None and self._owner == threading.get_ident():
            active.close()
        self._lock.acquire()
        self._owner = threading.get_ident()

    def _unclaim(self) -> None:
        self._active = None
        self._owner = None
        self._lock.release()

    def _release(self, session: _LlamaSession) -> None:
        if self._active is session:
            self._unclaim()

    def close(self) -> None:
        """Free the llama.cpp context and model (waits for another thread's open session)."""
        self._claim()
        try:
            if self._engine is not None:
                self._engine.free()
                self._engine = None
        finally:
            self._unclaim()

    def __enter__(self) -> LlamaLogitModel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "_engine", None) is not None and self._active is None:
                self._engine.free()  # type: ignore[union-attr]
                self._engine = None


class _LlamaSession:
    """The open contexts of a LlamaLogitModel (sequences 0..n-1 of its KV cache)."""

    def __init__(self, model: LlamaLogitModel, lengths: list[int], logprobs: list[LogProbs]) -> None:
        self._model = model
        self.lengths = lengths
        self._logprobs = logprobs
        self._closed = False

    @property
    def logprobs(self) -> list[LogProbs]:
        return list(self._logprobs)

    def advance(self, tokens: Sequence[int]) -> None:
        if self._closed:
            raise ModelError(f"{self._model.name}: the session is closed")
        self._logprobs = self._model._step(self, tokens)
        self.lengths = [n + 1 for n in self.lengths]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._model._release(self)

    def __enter__(self) -> _LlamaSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
