"""Score thresholds: the minimum score per metric a graded row needs to be kept for training (OUTPUT/kept/).

Without `--min-score` the defaults apply (a flow run given no thresholds, None, too); `--min-score
METRIC=N` sets one metric's minimum over the defaults (repeatable), `--min-score none` drops every threshold
(later METRIC=N items add to nothing), and METRIC=1 drops one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aidsafe.errors import ConfigError
from aidsafe.schemas import METRICS

# A policy-violating CoT or response (faithfulness to the policies 3 or less: a misread policy, leaked
# content, or over-caution) is not training data; the other metrics drop only clearly poor rows (2 or less).
DEFAULT_THRESHOLDS: dict[str, int] = {
    "relevance": 3,
    "coherence": 3,
    "completeness": 3,
    "faithfulness_policy_cot": 4,
    "faithfulness_policy_response": 4,
    "faithfulness_cot_response": 3,
}
NONE = "none"  # `--min-score none`: keep every graded row


def check_thresholds(thresholds: Mapping[str, int]) -> dict[str, int]:
    """Minimum score per metric; names must be metrics and values 1-5."""
    for metric, value in thresholds.items():
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r} in thresholds; metrics are {list(METRICS)}")
        if not 1 <= int(value) <= 5:
            raise ConfigError(f"threshold for {metric} must be between 1 and 5, got {value}")
    return {m: int(v) for m, v in thresholds.items()}


def resolve_thresholds(thresholds: Mapping[str, int] | None) -> dict[str, int]:
    """The thresholds a report applies: the defaults when none were given (None), else these, checked."""
    return dict(DEFAULT_THRESHOLDS) if thresholds is None else check_thresholds(thresholds)


def parse_thresholds(items: Iterable[str]) -> dict[str, int]:
    """`--min-score` items over the defaults: METRIC=N sets one minimum, `none` clears them all."""
    thresholds = dict(DEFAULT_THRESHOLDS)
    for item in items:
        if item.strip().lower() == NONE:
            thresholds = {}
            continue
        metric, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(
                f"--min-score {item!r}: expected METRIC=N (e.g. faithfulness_policy_cot=4) or {NONE}"
            )
        thresholds[metric.strip()] = int(value)
    return check_thresholds(thresholds)


def are_defaults(thresholds: Mapping[str, int]) -> bool:
    return dict(thresholds) == DEFAULT_THRESHOLDS
