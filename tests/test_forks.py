"""Issue 14's building blocks: matching forking tokens to traces (Hungarian), the matched-only loss, fork
usage, and near-duplicate traces by normalised n-gram Jaccard."""

from __future__ import annotations

import numpy as np
import pytest

from aidsafe.forks import fixed, fork_usage, match, matched_loss, usage_share
from aidsafe.trace_dedup import deduplicate, jaccard, ngrams


def test_matching_takes_the_least_total_loss_not_each_tokens_best() -> None:
    # token 0 is best on trace 0 (1) and token 1 too (2): greedy per token would clash;
    # the options: (0,0)+(1,1) = 1 + 5 = 6, (0,1)+(1,0) = 3 + 2 = 5 -> the second
    assignment = match([[1.0, 3.0], [2.0, 5.0]])
    assert assignment.pairs == ((0, 1), (1, 0)) and assignment.total == 5.0


def test_fewer_traces_than_tokens_leave_tokens_unmatched() -> None:
    # K=3, M=2: token 2 is cheapest on both traces, tokens 0/1 share the rest
    # (2,0)+(1,1) = 1 + 2 = 3 beats (2,1)+(0,0) = 1 + 4 = 5 and (0,0)+(1,1) = 4 + 2 = 6
    assignment = match([[4.0, 9.0], [8.0, 2.0], [1.0, 1.0]])
    assert sorted(assignment.pairs) == [(1, 1), (2, 0)] and assignment.total == 3.0
    assert 0 not in assignment.tokens


def test_more_traces_than_tokens_train_the_best_k() -> None:
    # K=2, M=3: trace 1 is expensive for both tokens, so it is the one left out
    assignment = match([[1.0, 9.0, 3.0], [2.0, 8.0, 1.0]])
    assert sorted(assignment.pairs) == [(0, 0), (1, 2)] and assignment.total == 2.0


@pytest.mark.parametrize("bad", [[], [[1.0, float("nan")]], [1.0, 2.0]])
def test_a_malformed_loss_matrix_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        match(bad)  # type: ignore[arg-type]


def test_the_loss_is_the_sum_of_matched_pairs_and_no_gradient_reaches_the_others() -> None:
    torch = pytest.importorskip("torch")
    losses = torch.tensor([[1.0, 3.0], [2.0, 5.0], [7.0, 0.5]], requires_grad=True)
    assignment = match(losses.detach().numpy())
    loss = matched_loss(losses, assignment)
    assert float(loss.detach()) == pytest.approx(
        sum(float(losses.detach()[i, j]) for i, j in assignment.pairs)
    )
    loss.backward()
    grad = losses.grad.numpy()
    expected = np.zeros((3, 2))
    for i, j in assignment.pairs:
        expected[i, j] = 1.0
    np.testing.assert_array_equal(grad, expected)


def test_fork_usage_counts_matches_per_token_and_shows_a_collapse() -> None:
    matched = [match([[1.0, 3.0], [2.0, 5.0]]), match([[1.0, 9.0], [9.0, 1.0]])]
    assert fork_usage(matched, 3) == [2, 2, 0]
    collapsed = [fixed(3, 1), fixed(3, 1)]
    assert fork_usage(collapsed, 3) == [2, 0, 0] and usage_share(fork_usage(collapsed, 3)) == 1.0
    assert usage_share(fork_usage(matched, 2)) == 0.5


def test_ngrams_are_normalised_for_case_and_punctuation() -> None:
    assert ngrams("The user, asks: HOW?", 2) == ngrams("the user asks how", 2)
    assert ngrams("one two", 3) == frozenset({("one", "two")}) and ngrams("", 3) == frozenset()
    assert jaccard(ngrams("a b c d", 2), ngrams("a b c e", 2)) == pytest.approx(2 / 4)


def test_dedup_drops_copies_and_keeps_distinct_traces() -> None:
    first = "The prompt asks for lock picking; policy P3 covers burglary, so refuse and suggest a locksmith."
    copy = "the prompt asks for LOCK picking - policy P3 covers burglary, so refuse and suggest a locksmith!"
    other = "Consider who owns the door: if it is the user's own home, a locksmith is the safe, legal help."
    result = deduplicate([first, copy, other], threshold=0.8)
    assert result.kept == (0, 2) and result.dropped == ((1, 0, 1.0),)
    assert result.diversity is not None and result.diversity > 0.8
    assert deduplicate([first], 0.8).diversity is None
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([first], 0.0)
