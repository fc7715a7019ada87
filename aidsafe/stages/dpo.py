"""Stage `dpo`: preference pairs by belief augmentation.

An ear-whisperer (its own red-teaming system prompt, without the shared safety preamble) writes a misleading
belief; a reply that matches whisper.toml's refusal patterns is not a belief: the whisperer is asked again
(dpo_whisper_retries), then the refusals are counted. The responder answers the belief and the prompt as one
ordinary user message, the way a deployed model meets them, and the grader scores that answer against the
plain prompt. The whisperer improves its belief from the grader's feedback, up to K attempts, until the
answer is clearly worse than the chosen (refined) one: its CoT policy faithfulness at most dpo_max_score and
at least dpo_margin below the chosen CoT's. A row whose chosen score leaves no room for that margin costs no
call. Rows without such an answer keep dpo_pair = false (dpo_outcome says why) and are left out of the export,
not faked.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.schemas import METRICS, Belief
from aidsafe.stage import RowContext, RowStage
from aidsafe.stages.common import as_list, now
from aidsafe.stages.grade import grade
from aidsafe.usage import USAGE
from graphs.protocol import Value
from graphs.schemas import Draft

# Why a row has (no) pair: a clearly worse answer was found; K attempts found none; the whisperer refused
# through its retries; the chosen CoT's policy score leaves no room for the margin (no call made).
Outcome = Literal["pair", "no_clear_margin", "whisperer_refused", "chosen_too_low"]
OUTCOMES: tuple[Outcome, ...] = ("pair", "no_clear_margin", "whisperer_refused", "chosen_too_low")
CHOSEN_SCORE = "score_faithfulness_policy_cot"
ATTEMPT = pa.struct(
    [
        ("attempt", pa.int32()),
        ("belief", pa.string()),
        ("score_policy_cot", pa.int8()),
        ("feedback", pa.string()),
    ]
)
COLUMNS = pa.schema(
    [
        ("dpo_pair", pa.bool_()),
        ("dpo_outcome", pa.string()),
        ("dpo_margin", pa.int8()),
        ("whisper_refusals", pa.int32()),
        ("belief", pa.string()),
        ("dpo_attempts", pa.list_(ATTEMPT)),
        ("rejected_cot", pa.list_(pa.string())),
        ("rejected_response", pa.string()),
        *((f"rejected_score_{m}", pa.int8()) for m in METRICS),
        ("model_whisperer", pa.string()),
        ("model_responder", pa.string()),
        ("usage_dpo", USAGE),
        ("dpo_at", pa.timestamp("us", tz="UTC")),
    ]
)


def worst_allowed(row: RowRef, ctx: RowContext) -> int:
    """The highest rejected CoT policy score that still makes a pair (below 1: no pair is possible)."""
    chosen = int(row.values[CHOSEN_SCORE])
    return min(ctx.settings.dpo_max_score, chosen - ctx.settings.dpo_margin)


async def whisper(ctx: RowContext, row: RowRef, attempts: list[dict[str, Any]]) -> tuple[Belief | None, int]:
    """A belief that is not a refusal (None if every ask was refused), and the refused replies."""
    data: dict[str, Value] = {"prompt": row.prompt, "attempts": attempts}
    follow_up: list[str] = []
    refusals = ctx.prompts["whisper"].refusals
    for refused in range(ctx.settings.dpo_whisper_retries + 1):
        belief = await ctx.calls.ask("whisperer", "whisper", Belief, data, follow_up=follow_up)
        phrase = refusals.match(belief.belief)
        if phrase is None:
            return belief, refused
        follow_up = [ctx.prompts.whisper_refused(phrase, Belief.__name__)]
    return None, ctx.settings.dpo_whisper_retries + 1


async def answer(ctx: RowContext, row: RowRef, belief: str, number: int) -> dict[str, Any]:
    """The responder's answer to belief + prompt as a user message, graded like the chosen answer (plain
    prompt, the row's intents)."""
    draft = await ctx.calls.ask("responder", "respond", Draft, {"belief": belief, "prompt": row.prompt})
    intents = as_list(row.values.get("intents"))
    scores = await grade(ctx, row.prompt, draft.thoughts, draft.response, intents)
    return {
        "attempt": number,
        "belief": belief,
        "score_policy_cot": scores["score_faithfulness_policy_cot"],
        "feedback": scores["rationale_faithfulness_policy_cot"],
        "cot": draft.thoughts,
        "response": draft.response,
        "scores": {m: scores[f"score_{m}"] for m in METRICS},
    }


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    limit = worst_allowed(row, ctx)
    attempts: list[dict[str, Any]] = []
    refusals = 0
    outcome: Outcome = "chosen_too_low" if limit < 1 else "no_clear_margin"
    while limit >= 1 and len(attempts) < ctx.settings.dpo_attempts:
        belief, refused = await whisper(ctx, row, attempts)
        refusals += refused
        if belief is None:
            outcome = "whisperer_refused"
            break
        attempts.append(await answer(ctx, row, belief.belief, len(attempts) + 1))
        if attempts[-1]["score_policy_cot"] <= limit:
            outcome = "pair"
            break
    return columns(row, ctx, attempts, refusals, outcome)


def columns(
    row: RowRef, ctx: RowContext, attempts: list[dict[str, Any]], refusals: int, outcome: Outcome
) -> dict[str, Any]:
    """The row's dpo columns; the rejected side is the last attempt's answer (none without an attempt)."""
    last: dict[str, Any] = attempts[-1] if attempts else {"scores": dict.fromkeys(METRICS)}
    margin = int(row.values[CHOSEN_SCORE]) - last["score_policy_cot"] if attempts else None
    return {
        "dpo_pair": outcome == "pair",
        "dpo_outcome": outcome,
        "dpo_margin": margin,
        "whisper_refusals": refusals,
        "belief": last.get("belief"),
        "dpo_attempts": [
            {k: a[k] for k in ("attempt", "belief", "score_policy_cot", "feedback")} for a in attempts
        ],
        "rejected_cot": last.get("cot"),
        "rejected_response": last.get("response"),
        **{f"rejected_score_{m}": s for m, s in last["scores"].items()},
        "model_whisperer": ctx.calls.model_name("whisperer"),
        "model_responder": ctx.calls.model_name("responder"),
        "usage_dpo": ctx.calls.used(),
        "dpo_at": now(),
    }


DPO = RowStage(
    name="dpo",
    help="DPO pairs by belief augmentation (OUTPUT/kept -> OUTPUT/dpo)",
    reads="report",
    output="dpo",
    prompts=("whisper", "respond", "grade"),
    roles=lambda settings: ["whisperer", "responder", "grader"],
    columns=COLUMNS,
    process=process,
    in_run="never",
)
