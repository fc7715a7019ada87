"""A LogitModel (aidsafe.logits) scripted by hand-written tables, recording every call it gets.

The next-token distribution of a context is looked up by its tail: the longest key of `table` that the
context ends with gives the probabilities over the tiny vocabulary `pieces` (normalised here, zeros allowed:
log 0 = -inf). `rule`, when given, is used instead: any function of the whole context. A context with no
matching key raises KeyError, so an unscripted path fails loudly.

`calls` lists ("open", contexts), ("advance", tokens) and ("close", []) in order; `evaluated` counts the
tokens evaluated (all of every context at open, one per context at advance), so a test can check that the
prefix is never evaluated again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from aidsafe.logits import LogProbs

Table = Mapping[tuple[int, ...], Sequence[float]]
Rule = Callable[[tuple[int, ...]], Sequence[float]]


class ScriptedLogitModel:
    """A LogitModel over `pieces` (token id -> text) whose distributions come from a table or a rule."""

    def __init__(
        self,
        pieces: Sequence[str],
        table: Table | None = None,
        *,
        rule: Rule | None = None,
        end_tokens: Sequence[int] = (0,),
        context_size: int = 512,
        fail_on_advance: int | None = None,  # raise RuntimeError at this advance call (1 = the first)
    ) -> None:
        self.pieces = list(pieces)
        self.table = dict(table or {})
        self.rule = rule
        self._end_tokens = frozenset(end_tokens)
        self._context_size = context_size
        self.fail_on_advance = fail_on_advance
        self.calls: list[tuple[str, list[list[int]] | list[int]]] = []
        self.evaluated = 0
        self.sessions: list[ScriptedSession] = []

    @property
    def name(self) -> str:
        return "scripted-logits"

    @property
    def end_tokens(self) -> frozenset[int]:
        return self._end_tokens

    @property
    def context_size(self) -> int:
        return self._context_size

    def tokenize(self, text: str) -> list[int]:
        """Greedy longest-piece match (enough for tests; end tokens are never produced)."""
        tokens: list[int] = []
        rest = text
        while rest:
            candidates = [(len(p), -i) for i, p in enumerate(self.pieces) if p and rest.startswith(p)]
            if not candidates:
                raise ValueError(f"cannot tokenize {rest!r}")
            length, negative = max(candidates)
            tokens.append(-negative)
            rest = rest[length:]
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self.pieces[t] for t in tokens)

    def distribution(self, context: Sequence[int]) -> LogProbs:
        """The scripted next-token log-probabilities after `context`."""
        key = tuple(context)
        if self.rule is not None:
            probs = self.rule(key)
        else:
            tails = [
                tail for tail in self.table if len(tail) <= len(key) and key[len(key) - len(tail) :] == tail
            ]
            if not tails:
                raise KeyError(f"no scripted distribution for a context ending {key[-4:]}")
            probs = self.table[max(tails, key=len)]
        values = np.asarray(probs, dtype=np.float64)
        if values.shape != (len(self.pieces),) or (values < 0).any() or values.sum() <= 0:
            raise ValueError(f"a scripted distribution needs {len(self.pieces)} probabilities: {probs}")
        with np.errstate(divide="ignore"):
            return np.log(values / values.sum()).astype(np.float32)

    def open(self, contexts: Sequence[Sequence[int]]) -> ScriptedSession:
        lists = [list(c) for c in contexts]
        if not lists or any(not c or len(c) > self._context_size for c in lists):
            raise ValueError(f"contexts must be non-empty and fit {self._context_size} tokens")
        self.calls.append(("open", [list(c) for c in lists]))  # a copy: the session extends lists
        self.evaluated += sum(len(c) for c in lists)
        session = ScriptedSession(self, lists)
        self.sessions.append(session)
        return session


class ScriptedSession:
    """The contexts of one `open`, extended by `advance`."""

    def __init__(self, model: ScriptedLogitModel, contexts: list[list[int]]) -> None:
        self.model = model
        self.contexts = contexts
        self.closed = False
        self.advances = 0

    @property
    def logprobs(self) -> list[LogProbs]:
        if self.closed:
            raise RuntimeError("session closed")
        return [self.model.distribution(c) for c in self.contexts]

    def advance(self, tokens: Sequence[int]) -> None:
        if self.closed:
            raise RuntimeError("session closed")
        if len(tokens) != len(self.contexts):
            raise ValueError(f"{len(tokens)} tokens for {len(self.contexts)} contexts")
        self.advances += 1
        self.model.calls.append(("advance", list(tokens)))
        if self.model.fail_on_advance == self.advances:
            raise RuntimeError("scripted failure in advance")
        if any(len(c) + 1 > self.model.context_size for c in self.contexts):
            raise ValueError("context size exceeded")
        for context, token in zip(self.contexts, tokens, strict=True):
            context.append(token)
        self.model.evaluated += len(tokens)

    def close(self) -> None:
        self.model.calls.append(("close", []))
        self.closed = True
