"""Near-duplicate traces of a prompt, by the Jaccard similarity of their normalised token n-grams.

Normalised: lower case, every run of non-alphanumeric characters a separator. Two traces whose n-gram sets
have a Jaccard similarity at or above the threshold (default 0.8) count as the same way of reasoning: the
first is kept. The pairwise diversity of what is kept is the mean of 1 - Jaccard over its pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

_WORD = re.compile(r"[^\W_]+")


def ngrams(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """The set of normalised word n-grams (a text shorter than n: its words as one gram)."""
    if n < 1:
        raise ValueError(f"n-grams need n >= 1, got {n}")
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    """|a & b| / |a | b|; two empty sets are the same (1.0)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


@dataclass(frozen=True)
class Deduplicated:
    kept: tuple[int, ...]  # indices of the traces kept, in order
    dropped: tuple[tuple[int, int, float], ...]  # (index, index of the kept trace it copies, similarity)
    diversity: float | None  # mean 1 - Jaccard over the kept pairs (None: fewer than two kept)


def deduplicate(texts: Sequence[str], threshold: float = 0.8, n: int = 3) -> Deduplicated:
    """Keep each trace unless it is a near-duplicate (Jaccard >= threshold) of one kept before it."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the similarity threshold must be in (0, 1], got {threshold}")
    grams = [ngrams(t, n) for t in texts]
    kept: list[int] = []
    dropped: list[tuple[int, int, float]] = []
    for index, mine in enumerate(grams):
        similar = [(jaccard(mine, grams[k]), k) for k in kept]
        best = max(similar, default=(0.0, -1))
        if best[0] >= threshold:
            dropped.append((index, best[1], round(best[0], 4)))
        else:
            kept.append(index)
    pairs = [1.0 - jaccard(grams[a], grams[b]) for a, b in combinations(kept, 2)]
    return Deduplicated(tuple(kept), tuple(dropped), sum(pairs) / len(pairs) if pairs else None)
