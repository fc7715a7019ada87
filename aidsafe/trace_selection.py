"""Which traces of a prompt are kept: those meeting the minimum scores that are not near-duplicates of a
better kept one (aidsafe.trace_dedup). The traces stage selects with its recipe and records how; `aidsafe
export sets --min-score` selects the stored traces again with other minimums (no model needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aidsafe.schemas import METRICS
from aidsafe.trace_dedup import deduplicate

BELOW = "below min_score"  # how the reason a trace was not kept starts when its scores were too low


@dataclass(frozen=True)
class Selection:
    min_score: Mapping[str, int]
    similarity: float
    ngram: int

    def columns(self) -> dict[str, Any]:
        """How a row's traces were selected, as its columns."""
        minimum = {m: self.min_score.get(m) for m in METRICS}
        return {"traces_min_score": minimum, "traces_similarity": self.similarity, "traces_ngram": self.ngram}


def below(scores: Mapping[str, int], minimum: Mapping[str, int]) -> str | None:
    """Why scores miss the minimum (the metrics below it), or None."""
    low = [f"{m} {scores[m]} < {n}" for m, n in minimum.items() if scores[m] < n]
    return f"{BELOW}: {', '.join(low)}" if low else None


def select(
    traces: Sequence[Mapping[str, Any]], rule: Selection
) -> tuple[list[dict[str, Any]], int, float | None]:
    """Every trace with kept/dropped set, how many met the minimum scores, and the kept ones' diversity.

    The passing traces are compared in order of their total score, so of two copies the better one stays."""
    marked = [{**t, "dropped": below(t["scores"], rule.min_score)} for t in traces]
    passing = sorted((t for t in marked if t["dropped"] is None), key=lambda t: -sum(t["scores"].values()))
    texts = ["\n".join([*t["cot"], t["response"]]) for t in passing]
    found = deduplicate(texts, rule.similarity, rule.ngram)
    for index, copied, similarity in found.dropped:
        kept = passing[copied]["configuration"]
        passing[index]["dropped"] = f"near-duplicate of {kept} (Jaccard {similarity:.2f})"
    return [{**t, "kept": t["dropped"] is None} for t in marked], len(passing), found.diversity
