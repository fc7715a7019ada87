"""Contrastive decoding of a rationale: the tokens that explain the true answer rather than a perturbed one.

Two contexts share a few-shot prompt and a question and differ in the answer: the *true* context ends with
the true answer and "Rationale:", the *perturbed* one with a perturbed answer. The rationale is decoded token
by token; at every step the same rationale prefix is appended to both contexts, and among the tokens
*plausible* under the true context (`plausible_mask`) the chosen one maximises

    log p_true(t) - weight * log p_perturbed(t)

(greedy; ties go to the lowest token id). Plain greedy decoding (argmax log p_true) is the baseline mode.
Decoding stops at one of the model's end tokens, at a stop string, or at the token budget.

`decode` opens one `LogitSession` over the contexts and advances every context by the chosen token at each
step, so a step costs one token of evaluation per context (aidsafe.logits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from aidsafe.errors import ModelError
from aidsafe.logits import LogitModel, LogitSession, LogProbs

Mode = Literal["contrastive", "greedy"]
Plausible = Literal["alpha", "top_k", "top_p"]
Stopped = Literal["end", "stop", "budget"]


def _check_plausible(plausible: str, value: float) -> None:
    """ValueError unless `value` is a valid parameter of the plausibility rule `plausible`."""
    if plausible == "alpha":
        if not 0.0 < value <= 1.0:
            raise ValueError(f"plausible_value for 'alpha' must be in (0, 1], got {value!r}")
    elif plausible == "top_k":
        if not (float(value).is_integer() and value >= 1):
            raise ValueError(f"plausible_value for 'top_k' must be an integer >= 1, got {value!r}")
    elif plausible == "top_p":
        if not 0.0 < value <= 1.0:
            raise ValueError(f"plausible_value for 'top_p' must be in (0, 1], got {value!r}")
    else:
        raise ValueError(f"plausible must be 'alpha', 'top_k' or 'top_p', got {plausible!r}")


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode a rationale.

    plausible_value: for `alpha`, keep tokens with p >= value * max p; for `top_k`, the k (an integer) most
    probable tokens; for `top_p`, the smallest set of most probable tokens whose mass is >= value.
    stop: decoding ends when the decoded text contains one of these strings; the text is cut before it.
    """

    mode: Mode = "contrastive"
    weight: float = 1.0
    plausible: Plausible = "alpha"
    plausible_value: float = 0.1
    max_tokens: int = 48
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("contrastive", "greedy"):
            raise ValueError(f"mode must be 'contrastive' or 'greedy', got {self.mode!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {self.weight!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        _check_plausible(self.plausible, self.plausible_value)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")


@dataclass(frozen=True)
class Decoded:
    """A decoded rationale.

    text: stripped, cut before the first stop string; end tokens are never part of it.
    tokens: the chosen tokens, without the end token; when a stop string ended decoding, the tokens that
    spell it (and anything after it in the last token) are still listed, though cut from `text`.
    mean_gap: mean over `tokens` of log p_true - log p_perturbed (None without a perturbed context, or when
    no token was chosen before the end token).
    stopped: "end" (an end token was chosen), "stop" (a stop string), "budget" (max_tokens, or the model's
    context size, reached).
    """

    text: str
    tokens: list[int]
    mean_gap: float | None
    stopped: Stopped
    seconds: float


def plausible_mask(logprobs: LogProbs, plausible: str, value: float) -> npt.NDArray[np.bool_]:
    """The tokens plausible under `logprobs`; always contains the argmax. Ties at the edge: lowest ids."""
    _check_plausible(plausible, value)
    lp = np.asarray(logprobs, dtype=np.float64)
    best = int(np.argmax(lp))
    if plausible == "alpha":
        mask = lp >= lp[best] + math.log(value)
    else:
        order = np.argsort(-lp, kind="stable")  # most probable first, equal ones by id
        if plausible == "top_k":
            keep = int(value)
        else:
            probs = np.exp(lp[order] - lp[best])
            mass = np.cumsum(probs / probs.sum())
            keep = int(np.searchsorted(mass, value, side="left")) + 1
        mask = np.zeros(lp.shape, dtype=np.bool_)
        mask[order[: min(keep, lp.size)]] = True
    mask[best] = True
    return mask


def choose(true_lp: LogProbs, perturbed_lp: LogProbs | None, settings: DecodeSettings) -> int:
    """The next token: greedy under the true context, or the contrastive choice among plausible tokens."""
    true = np.asarray(true_lp, dtype=np.float64)
    if settings.mode == "greedy":
        return int(np.argmax(true))
    if perturbed_lp is None:
        raise ValueError("contrastive decoding needs the perturbed context's log-probabilities")
    perturbed = np.asarray(perturbed_lp, dtype=np.float64)
    if perturbed.shape != true.shape:
        raise ValueError(f"log-probabilities of different shapes: {true.shape} and {perturbed.shape}")
    mask = plausible_mask(true_lp, settings.plausible, settings.plausible_value)
    with np.errstate(invalid="ignore"):
        score = true - settings.weight * perturbed if settings.weight > 0 else true.copy()
    score[np.isnan(score)] = -np.inf  # -inf - (-inf): a token impossible under both contexts
    score[~mask] = -np.inf
    if score.max() == -np.inf:
        return int(np.argmax(true))
    return int(np.argmax(score))  # the first maximum: ties go to the lowest id


def _find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in text[start:] (an index into text), or None."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _steps(model: LogitModel, contexts: Sequence[Sequence[int]], settings: DecodeSettings) -> int:
    """How many tokens may be chosen: the budget, capped so that no context outgrows the model."""
    longest = max(len(c) for c in contexts)
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    if longest > model.context_size:  # a row too long for the teacher: that row fails, not the partition
        raise ModelError(f"a context of {longest} tokens exceeds the model's {model.context_size}")
    # The first token needs no advance; each further one appends one token to every context.
    return min(settings.max_tokens, model.context_size - longest + 1)


def _run(
    model: LogitModel, session: LogitSession, steps: int, settings: DecodeSettings
) -> tuple[list[int], list[float], Stopped]:
    """The decoding loop: chosen tokens, their gaps (empty with one context), and why it stopped."""
    tokens: list[int] = []
    gaps: list[float] = []
    longest_stop = max((len(s) for s in settings.stop), default=0)
    checked = 0  # length of the text already searched for stop strings
    while True:
        logprobs = session.logprobs
        perturbed = logprobs[1] if len(logprobs) > 1 else None
        token = choose(logprobs[0], perturbed, settings)
        if token in model.end_tokens:
            return tokens, gaps, "end"
        tokens.append(token)
        if perturbed is not None:
            gaps.append(float(logprobs[0][token]) - float(perturbed[token]))
        if settings.stop:
            text = model.detokenize(tokens)
            # Only the tail can hold a new stop string (a few characters back: the last one may have
            # changed when a multi-byte character was completed).
            if _find_stop(text, settings.stop, max(0, checked - longest_stop - 4)) is not None:
                return tokens, gaps, "stop"
            checked = len(text)
        if len(tokens) >= steps:
            return tokens, gaps, "budget"
        session.advance([token] * len(logprobs))


def decode(
    model: LogitModel,
    true_context: Sequence[int],
    perturbed_context: Sequence[int] | None,
    settings: DecodeSettings,
) -> Decoded:
    """Decode a rationale after `true_context`, contrasted with `perturbed_context` (see the module doc).

    Greedy mode with a perturbed context still evaluates it, so that `mean_gap` is comparable; greedy with
    None evaluates the true context alone. Contrastive mode needs a perturbed context.
    """
    if settings.mode == "contrastive" and perturbed_context is None:
        raise ValueError("contrastive decoding needs a perturbed context")
    contexts = [list(true_context)]
    if perturbed_context is not None:
        contexts.append(list(perturbed_context))
    steps = _steps(model, contexts, settings)
    started = time.perf_counter()
    session = model.open(contexts)
    try:
        tokens, gaps, stopped = _run(model, session, steps, settings)
    finally:
        session.close()
    text = model.detokenize(tokens)
    cut = _find_stop(text, settings.stop)
    if cut is not None:
        text = text[:cut]
    return Decoded(
        text=text.strip(),
        tokens=tokens,
        mean_gap=float(np.mean(gaps)) if perturbed_context is not None and gaps else None,
        stopped=stopped,
        seconds=time.perf_counter() - started,
    )
