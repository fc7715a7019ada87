"""Stage `dpo`: preference pairs by belief augmentation.

An ear-whisperer writes a misleading belief, which is prepended to the prompt; the pipeline's drafter answers
the augmented prompt; the grader scores that answer. The whisperer improves its belief from the grader's
feedback, up to K attempts, until the answer is judged policy-violating (CoT policy faithfulness at or below
a threshold). The refined CoT is chosen, the belief-induced one rejected. Rows where no attempt made a clearly
worse answer keep dpo_pair = false and are left out of the export, not faked.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aidsafe.partitions import RowRef
from aidsafe.schemas import METRICS, Belief
from aidsafe.stage import RowContext, RowStage
from aidsafe.stages.common import as_list, now
from aidsafe.stages.grade import grade
from aidsafe.usage import USAGE
from graphs.protocol import Value
from graphs.schemas import Draft

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
        ("belief", pa.string()),
        ("dpo_attempts", pa.list_(ATTEMPT)),
        ("rejected_cot", pa.list_(pa.string())),
        ("rejected_response", pa.string()),
        *((f"rejected_score_{m}", pa.int8()) for m in METRICS),
        ("model_whisperer", pa.string()),
        ("usage_dpo", USAGE),
        ("dpo_at", pa.timestamp("us", tz="UTC")),
    ]
)


async def attempt(ctx: RowContext, row: RowRef, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """One whisper -> draft -> grade round; returns the attempt's record."""
    data: dict[str, Value] = {"prompt": row.prompt, "attempts": attempts}
    belief = await ctx.calls.ask("whisperer", "whisper", Belief, data)
    augmented = ctx.prompts.frame_belief(belief.belief, row.prompt)
    intents = as_list(row.values.get("intents"))
    draft = await ctx.calls.ask("drafter", "draft", Draft, {"prompt": augmented, "intents": intents})
    scores = await grade(ctx, row.prompt, draft.thoughts, draft.response)
    return {
        "attempt": len(attempts) + 1,
        "belief": belief.belief,
        "score_policy_cot": scores["score_faithfulness_policy_cot"],
        "feedback": scores["rationale_faithfulness_policy_cot"],
        "cot": draft.thoughts,
        "response": draft.response,
        "scores": {m: scores[f"score_{m}"] for m in METRICS},
    }


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = []
    while len(attempts) < ctx.settings.dpo_attempts:
        attempts.append(await attempt(ctx, row, attempts))
        if attempts[-1]["score_policy_cot"] <= ctx.settings.dpo_max_score:
            break
    last = attempts[-1]
    return {
        "dpo_pair": last["score_policy_cot"] <= ctx.settings.dpo_max_score,
        "belief": last["belief"],
        "dpo_attempts": [
            {k: a[k] for k in ("attempt", "belief", "score_policy_cot", "feedback")} for a in attempts
        ],
        "rejected_cot": last["cot"],
        "rejected_response": last["response"],
        **{f"rejected_score_{m}": s for m, s in last["scores"].items()},
        "model_whisperer": ctx.calls.model_name("whisperer"),
        "usage_dpo": ctx.calls.used(),
        "dpo_at": now(),
    }


DPO = RowStage(
    name="dpo",
    help="DPO pairs by belief augmentation (OUTPUT/kept -> OUTPUT/dpo)",
    reads="report",
    output="dpo",
    prompts=("whisper", "draft", "grade"),
    roles=lambda settings: ["whisperer", "drafter", "grader"],
    columns=COLUMNS,
    process=process,
    in_run="never",
)
