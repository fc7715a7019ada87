"""Set-supervised fine-tuning with forking tokens: which forking token learns which trace of a prompt.

Each prompt has M traces and the model K forking tokens `<think1>` ... `<thinkK>`. With the K x M matrix of
losses (the sequence NLL of trace j after forking token i), the assignment of tokens to traces with the least
total loss is a bipartite matching (the Hungarian algorithm, scipy's linear_sum_assignment); only the matched
pairs are trained. M < K leaves K - M tokens unmatched for that prompt; M > K trains the K traces the matching
picks (the best K). A fixed assignment instead lets one token take every mode: the usage counts show it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Assignment:
    """The matched (forking token, trace) pairs of one prompt, by index, and their total loss."""

    pairs: tuple[tuple[int, int], ...]
    total: float

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.pairs)


def match(losses: npt.ArrayLike) -> Assignment:
    """The least-loss assignment of forking tokens (rows) to traces (columns), one trace per token at most."""
    from scipy.optimize import linear_sum_assignment

    matrix = np.asarray(losses, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"a K x M loss matrix with K, M >= 1 is needed, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("the loss matrix has NaN or infinite entries")
    rows, columns = linear_sum_assignment(matrix)
    pairs = tuple((int(i), int(j)) for i, j in zip(rows, columns, strict=True))
    return Assignment(pairs, float(matrix[rows, columns].sum()))


def fixed(tokens: int, traces: int) -> Assignment:
    """The baseline without matching: trace j is always trained after token j (the first min(K, M))."""
    return Assignment(tuple((j, j) for j in range(min(tokens, traces))), float("nan"))


def matched_loss(losses: Any, assignment: Assignment) -> Any:
    """The training loss of one prompt: the sum of the matched entries of a (torch) K x M loss matrix only,
    so no gradient reaches an unmatched pair."""
    if not assignment.pairs:
        raise ValueError("an assignment without pairs has no loss")
    rows = [i for i, _ in assignment.pairs]
    columns = [j for _, j in assignment.pairs]
    return losses[rows, columns].sum()


def fork_usage(assignments: Iterable[Assignment], tokens: int) -> list[int]:
    """How many traces each forking token was matched to (a collapse: one token takes everything)."""
    counts = Counter(i for a in assignments for i in a.tokens)
    return [counts.get(i, 0) for i in range(tokens)]


def usage_share(usage: Sequence[int]) -> float:
    """The share of the matches taken by the most used token (1/K when even, 1.0 at a collapse)."""
    total = sum(usage)
    return max(usage) / total if total else 0.0
