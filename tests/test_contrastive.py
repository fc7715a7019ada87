"""Contrastive decoding (aidsafe.contrastive) on hand-written distributions with hand-computed choices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from aidsafe.contrastive import Decoded, DecodeSettings, choose, decode, plausible_mask
from aidsafe.errors import ModelError
from aidsafe.logits import LogProbs
from tests.scripted_logits import ScriptedLogitModel


def lp(*probs: float) -> LogProbs:
    """Log-probabilities from probabilities (normalised; zeros give -inf)."""
    values = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(values / values.sum()).astype(np.float32)


# ---------------------------------------------------------------- one step: choose / plausible_mask

# Token:          0     1    2    3     4
STEP_TRUE = lp(0.01, 0.5, 0.3, 0.15, 0.04)
STEP_PERTURBED = lp(0.01, 0.6, 0.1, 0.25, 0.04)
# alpha 0.1: plausible iff p_true >= 0.1 * 0.5 = 0.05 -> {1, 2, 3}.
# scores log(p_true / p_perturbed): 1: log(0.5/0.6) = -0.182, 2: log(0.3/0.1) = log 3 = +1.099,
# 3: log(0.15/0.25) = -0.511  -> contrastive picks 2; greedy (max p_true = 0.5) picks 1.


def test_contrastive_picks_the_token_that_separates_the_answers_where_greedy_picks_the_likeliest() -> None:
    assert choose(STEP_TRUE, STEP_PERTURBED, DecodeSettings()) == 2
    assert choose(STEP_TRUE, STEP_PERTURBED, DecodeSettings(mode="greedy")) == 1
    assert choose(STEP_TRUE, None, DecodeSettings(mode="greedy")) == 1


def test_weight_scales_the_perturbed_term() -> None:
    # weight 0.2: 1: log 0.5 - 0.2 log 0.6 = -0.693 + 0.102 = -0.591;
    #   2: log 0.3 - 0.2 log 0.1 = -1.204 + 0.461 = -0.743;
    #   3: log 0.15 - 0.2 log 0.25 = -1.897 + 0.277 = -1.620
    #   -> 1 (a weak contrast keeps greedy's pick).
    assert choose(STEP_TRUE, STEP_PERTURBED, DecodeSettings(weight=0.2)) == 1
    # weight 0.5: 1: -0.693 + 0.255 = -0.438; 2: -1.204 + 1.151 = -0.053; 3: -1.897 + 0.693 = -1.204 -> 2.
    assert choose(STEP_TRUE, STEP_PERTURBED, DecodeSettings(weight=0.5)) == 2


# Token 4 is implausible under the true context (0.04) but almost impossible under the perturbed one:
# its gap log(0.04 / 1e-6) = 10.6 dwarfs token 2's log 3 = 1.1.
TEMPT_PERTURBED = lp(0.01, 0.6, 0.1, 0.289999, 0.000001)


@pytest.mark.parametrize(
    ("plausible", "strict", "loose"),
    [
        ("alpha", 0.1, 0.01),  # strict: p >= 0.05 -> {1,2,3}; loose: p >= 0.005 -> all five
        ("top_k", 3, 5),  # strict: the 3 likeliest {1,2,3}; loose: all five
        ("top_p", 0.9, 0.995),  # strict: 0.5+0.3+0.15 = 0.95 >= 0.9 -> {1,2,3}; loose: 0.99 < 0.995 -> all
    ],
)
def test_a_huge_gap_never_wins_when_the_token_is_implausible_under_the_true_context(
    plausible: Any, strict: float, loose: float
) -> None:
    settings = DecodeSettings(plausible=plausible, plausible_value=strict)
    assert plausible_mask(STEP_TRUE, plausible, strict).tolist() == [False, True, True, True, False]
    assert choose(STEP_TRUE, TEMPT_PERTURBED, settings) == 2
    # Control: once token 4 is plausible its gap wins, so the strict result is the mask's doing.
    assert choose(STEP_TRUE, TEMPT_PERTURBED, DecodeSettings(plausible=plausible, plausible_value=loose)) == 4


def test_plausible_masks_by_hand() -> None:
    probs = lp(0.1, 0.3, 0.3, 0.3)
    assert plausible_mask(probs, "top_k", 2).tolist() == [False, True, True, False]  # ties: lowest ids
    assert plausible_mask(probs, "top_k", 10).tolist() == [True] * 4
    assert plausible_mask(probs, "alpha", 1.0).tolist() == [False, True, True, True]
    three = lp(0.5, 0.3, 0.2)
    assert plausible_mask(three, "top_p", 0.4).tolist() == [True, False, False]  # 0.5 >= 0.4
    assert plausible_mask(three, "top_p", 0.75).tolist() == [True, True, False]  # 0.8 >= 0.75
    assert plausible_mask(three, "top_p", 0.85).tolist() == [True, True, True]
    assert plausible_mask(three, "top_p", 1.0).tolist() == [True, True, True]  # float mass just under 1
    assert plausible_mask(three, "alpha", 0.5).tolist() == [True, True, False]  # p >= 0.25


def test_mask_always_holds_the_argmax_and_contrastive_choices_stay_in_it() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        true, perturbed = (lp(*rng.dirichlet(np.full(8, 0.3))) for _ in range(2))
        for plausible, value in (("alpha", 0.1), ("top_k", 1), ("top_p", 0.01), ("top_p", 0.7)):
            mask = plausible_mask(true, plausible, value)
            assert mask[int(np.argmax(true))]
            settings = DecodeSettings(plausible=plausible, plausible_value=value)  # type: ignore[arg-type]
            assert mask[choose(true, perturbed, settings)]


def test_weight_zero_is_greedy() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        true, perturbed = (lp(*rng.dirichlet(np.full(8, 0.5))) for _ in range(2))
        greedy = choose(true, perturbed, DecodeSettings(mode="greedy"))
        assert choose(true, perturbed, DecodeSettings(weight=0.0)) == greedy
    assert choose(STEP_TRUE, STEP_PERTURBED, DecodeSettings(weight=0.0)) == 1


def test_ties_break_to_the_lowest_token_id() -> None:
    true = lp(0.1, 0.2, 0.35, 0.35)
    assert choose(true, None, DecodeSettings(mode="greedy")) == 2
    # Same gap for 1 and 3 (0.2/0.1 = 0.4/0.2 = 2, both plausible at alpha 0.1): the lower id, 1.
    true, perturbed = lp(0.1, 0.2, 0.3, 0.4), lp(0.4, 0.1, 0.3, 0.2)
    assert choose(true, perturbed, DecodeSettings()) == 1


def test_tokens_impossible_under_both_contexts_are_not_chosen() -> None:
    # Token 0 is -inf under both (score -inf - -inf = nan): it must not be picked; 1 gap log(0.6/0.5).
    true, perturbed = lp(0.0, 0.6, 0.4), lp(0.0, 0.5, 0.5)
    assert choose(true, perturbed, DecodeSettings(plausible="top_k", plausible_value=3)) == 1


def test_contrastive_choice_needs_perturbed_logprobs_of_the_same_shape() -> None:
    with pytest.raises(ValueError, match="perturbed"):
        choose(STEP_TRUE, None, DecodeSettings())
    with pytest.raises(ValueError, match="shape"):
        choose(STEP_TRUE, lp(0.5, 0.5), DecodeSettings())


# ---------------------------------------------------------------- settings validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": -0.1}, "weight"),
        ({"weight": math.nan}, "weight"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"plausible_value": 0.0}, "alpha"),
        ({"plausible_value": 1.5}, "alpha"),
        ({"plausible": "top_k", "plausible_value": 0}, "top_k"),
        ({"plausible": "top_k", "plausible_value": 2.5}, "top_k"),
        ({"plausible": "top_p", "plausible_value": 0.0}, "top_p"),
        ({"plausible": "top_p", "plausible_value": 1.01}, "top_p"),
        ({"plausible": "nucleus"}, "plausible"),
        ({"mode": "beam"}, "mode"),
        ({"stop": ("",)}, "stop"),
        ({"stop": "Q:"}, "stop"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecodeSettings(**kwargs)


def test_valid_edge_settings_are_accepted() -> None:
    DecodeSettings(weight=0.0, plausible_value=1.0, max_tokens=1)
    DecodeSettings(plausible="top_k", plausible_value=3.0)
    DecodeSettings(plausible="top_p", plausible_value=1.0, stop=("\n\n",))


# ---------------------------------------------------------------- decode on a scripted model

PIECES = ["</s>", " safe", " unsafe", " because", " Rule", ".", "\nQ:"]
PROMPT = [5, 6]
TRUE = [*PROMPT, 1]  # ... the true answer " safe"
PERTURBED = [*PROMPT, 2]  # ... the perturbed answer " unsafe"
# Token:  0     1     2       3     4     5       6
T1 = [0.04, 0.02, 0.02, 0.30, 0.50, 0.08, 0.04]  # after the true answer
P1 = [0.04, 0.02, 0.0001, 0.10, 0.60, 0.1999, 0.04]  # after the perturbed answer
T2 = [0.10, 0.02, 0.02, 0.02, 0.30, 0.50, 0.04]  # true, after " because"
P2 = [0.10, 0.02, 0.02, 0.02, 0.15, 0.65, 0.04]  # perturbed, after " because"
G = [0.10, 0.02, 0.02, 0.02, 0.02, 0.80, 0.02]  # after " Rule" (greedy's path)
E = [0.90, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]  # after " because Rule" or "." : the end
TABLE = {(1,): T1, (2,): P1, (1, 3): T2, (2, 3): P2, (4,): G, (3, 4): E, (5,): E}
# Contrastive (alpha 0.1, weight 1):
#   step 1: plausible p_true >= 0.05 -> {3, 4, 5}; token 2's gap log(0.02/0.0001) = 5.3 is implausible.
#           3: log(0.30/0.10) = log 3 = 1.099, 4: log(0.50/0.60) = -0.182, 5: log(0.08/0.1999) = -0.916 -> 3
#   step 2: plausible p_true >= 0.05 -> {0, 4, 5}; 0: log(0.10/0.10) = 0, 4: log(0.30/0.15) = log 2 = 0.693,
#           5: log(0.50/0.65) = -0.262 -> 4
#   step 3: E under both, only 0 plausible -> end.  Tokens [3, 4], mean gap (log 3 + log 2) / 2 = log(6) / 2.
# Greedy: step 1 -> 4 (0.50); step 2 after " Rule": G -> 5 (0.80); step 3: E -> end.  Tokens [4, 5],
#   gap (log(0.50/0.60) + log(0.80/0.80)) / 2 = log(5/6) / 2.


def scripted(**kwargs: Any) -> ScriptedLogitModel:
    return ScriptedLogitModel(PIECES, TABLE, **kwargs)


def run(model: ScriptedLogitModel, perturbed: list[int] | None = PERTURBED, **settings: Any) -> Decoded:
    return decode(model, TRUE, perturbed, DecodeSettings(**settings))


def test_contrastive_decode_follows_the_hand_computed_path_to_the_end_token() -> None:
    model = scripted()
    decoded = run(model)
    assert (decoded.tokens, decoded.text, decoded.stopped) == ([3, 4], "because Rule", "end")
    assert decoded.mean_gap == pytest.approx(math.log(6) / 2, abs=1e-5)
    assert decoded.seconds >= 0


def test_greedy_decode_with_a_perturbed_context_still_measures_the_gap() -> None:
    model = scripted()
    decoded = run(model, mode="greedy")
    assert (decoded.tokens, decoded.text, decoded.stopped) == ([4, 5], "Rule.", "end")
    assert decoded.mean_gap == pytest.approx(math.log(5 / 6) / 2, abs=1e-5)
    assert model.calls[0] == ("open", [TRUE, PERTURBED])


def test_greedy_without_a_perturbed_context_opens_one_context() -> None:
    model = scripted()
    decoded = run(model, perturbed=None, mode="greedy")
    assert (decoded.tokens, decoded.mean_gap, decoded.stopped) == ([4, 5], None, "end")
    assert model.calls == [("open", [TRUE]), ("advance", [4]), ("advance", [5]), ("close", [])]


def test_contrastive_decode_refuses_a_missing_perturbed_context_before_opening() -> None:
    model = scripted()
    with pytest.raises(ValueError, match="perturbed"):
        run(model, perturbed=None)
    assert model.calls == []


def test_each_step_advances_every_context_by_one_token_and_never_reevaluates_the_prefix() -> None:
    model = scripted()
    run(model)
    assert model.calls == [
        ("open", [TRUE, PERTURBED]),
        ("advance", [3, 3]),
        ("advance", [4, 4]),
        ("close", []),
    ]
    assert model.evaluated == len(TRUE) + len(PERTURBED) + 2 * 2
    assert model.sessions[0].contexts == [[*TRUE, 3, 4], [*PERTURBED, 3, 4]]


def test_a_stop_string_ends_decoding_and_is_cut_from_the_text() -> None:
    model = scripted()
    decoded = run(model, stop=("Rule",))
    assert (decoded.tokens, decoded.text, decoded.stopped) == ([3, 4], "because", "stop")
    # The last token is not advanced: decoding ended on it.
    assert model.calls == [("open", [TRUE, PERTURBED]), ("advance", [3, 3]), ("close", [])]


def test_a_stop_string_spanning_two_tokens_is_found() -> None:
    decoded = run(scripted(), stop=("nothing", "se R"))  # " because" + " Rule"
    assert (decoded.text, decoded.stopped) == ("becau", "stop")


def test_the_earliest_stop_string_cuts_the_text() -> None:
    decoded = run(scripted(), stop=("Rule", "cause"))
    assert (decoded.text, decoded.stopped) == ("be", "stop")  # " because" already holds "cause"
    assert decoded.tokens == [3]


def test_the_token_budget_ends_decoding() -> None:
    model = scripted()
    decoded = run(model, max_tokens=1)
    assert (decoded.tokens, decoded.stopped) == ([3], "budget")
    assert decoded.mean_gap == pytest.approx(math.log(3), abs=1e-5)
    assert model.calls == [("open", [TRUE, PERTURBED]), ("close", [])]
    decoded = run(scripted(), max_tokens=2)  # the end token would have come third
    assert (decoded.tokens, decoded.text, decoded.stopped) == ([3, 4], "because Rule", "budget")


def test_a_full_context_ends_decoding_as_budget_without_overflowing_the_model() -> None:
    model = scripted(context_size=len(TRUE) + 1)  # room for one advance
    decoded = run(model)
    assert (decoded.tokens, decoded.stopped) == ([3, 4], "budget")
    with pytest.raises(ModelError, match="exceeds"):
        run(scripted(context_size=len(TRUE) - 1))


def test_an_end_token_first_gives_an_empty_rationale() -> None:
    model = ScriptedLogitModel(PIECES, {(1,): E, (2,): E})
    decoded = run(model)
    assert (decoded.text, decoded.tokens, decoded.mean_gap, decoded.stopped) == ("", [], None, "end")
    assert model.calls == [("open", [TRUE, PERTURBED]), ("close", [])]


def test_end_tokens_come_from_the_model() -> None:
    # With "." (5) as the only end token, greedy stops at it: " Rule" then end, "." not in the text.
    decoded = run(scripted(end_tokens=(5,)), mode="greedy")
    assert (decoded.tokens, decoded.text, decoded.stopped) == ([4], "Rule", "end")


def test_the_session_is_closed_when_the_model_raises() -> None:
    model = scripted(fail_on_advance=2)
    with pytest.raises(RuntimeError, match="scripted failure"):
        run(model)
    assert model.sessions[0].closed
    assert model.calls[-1] == ("close", [])
    # A context the script does not cover: the logprobs raise, the session still closes.
    model = ScriptedLogitModel(PIECES, {(1,): T1})
    with pytest.raises(KeyError):
        run(model)
    assert model.sessions[0].closed
