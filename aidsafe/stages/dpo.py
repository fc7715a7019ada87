"""Stage `dpo`: preference pairs by belief augmentation.

An ear-whisperer writes a misleading belief, which is prepended to the prompt; the pipeline's drafter answers
the augmented prompt; the grader scores that answer. The whisperer improves its belief from the grader's
feedback, up to K attempts, until the answer is judged policy-violating (CoT policy faithfulness at or below
a threshold). The refined CoT is chosen, the belief-induced one rejected. Rows where no attempt made a clearly
worse answer keep dpo_pair = false and are left out of the export, not faked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from aidsafe.config import Settings
from aidsafe.errors import StageFailed
from aidsafe.output import USAGE
from aidsafe.partitions import Partition, RowRef, read_stage_output
from aidsafe.render import Value
from aidsafe.runner import RowContext
from aidsafe.schemas import METRICS, Belief
from aidsafe.stages.common import as_list, now
from aidsafe.stages.grade import grade
from graphs.schemas import Draft
from graphs.state import NO_USAGE, Usage, total

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


async def _call(
    ctx: RowContext, role: str, stage: str, schema: Any, data: dict[str, Value]
) -> tuple[Any, Usage]:
    try:
        return await ctx.models[role].call(schema, ctx.prompts[stage].messages(**data))
    except Exception as exc:
        raise StageFailed("dpo", exc) from exc


async def attempt(
    ctx: RowContext, row: RowRef, attempts: list[dict[str, Any]]
) -> tuple[dict[str, Any], Usage]:
    """One whisper -> draft -> grade round; returns the attempt's record and its usage."""
    belief, u1 = await _call(
        ctx, "whisperer", "whisper", Belief, {"prompt": row.prompt, "attempts": attempts}
    )
    augmented = ctx.prompts.frame_belief(belief.belief, row.prompt)
    intents = as_list(row.values.get("intents"))
    draft, u2 = await _call(ctx, "drafter", "draft", Draft, {"prompt": augmented, "intents": intents})
    scores, u3 = await grade(ctx, row.prompt, draft.thoughts, draft.response)
    record = {
        "attempt": len(attempts) + 1,
        "belief": belief.belief,
        "score_policy_cot": scores["score_faithfulness_policy_cot"],
        "feedback": scores["rationale_faithfulness_policy_cot"],
        "cot": draft.thoughts,
        "response": draft.response,
        "scores": {m: scores[f"score_{m}"] for m in METRICS},
    }
    return record, total(u1, u2, u3)


class DpoStage:
    name = "dpo"
    output_subdir = "dpo"
    prompt_names = ("whisper", "draft", "grade")
    columns = COLUMNS

    def roles(self, settings: Settings) -> list[str]:
        return ["whisperer", "drafter", "grader"]

    def identity(self, settings: Settings) -> str:
        return settings.identity(
            self.roles(settings), k=settings.dpo_attempts, max_score=settings.dpo_max_score
        )

    def read(self, path: Path, taken_ids: frozenset[str], max_chars: int) -> Partition:
        return read_stage_output(path)

    async def process(self, row: RowRef, ctx: RowContext) -> tuple[dict[str, Any], Usage]:
        attempts: list[dict[str, Any]] = []
        usage = NO_USAGE
        while len(attempts) < ctx.settings.dpo_attempts:
            record, used = await attempt(ctx, row, attempts)
            attempts.append(record)
            usage = total(usage, used)
            if record["score_policy_cot"] <= ctx.settings.dpo_max_score:
                break
        last = attempts[-1]
        columns = {
            "dpo_pair": last["score_policy_cot"] <= ctx.settings.dpo_max_score,
            "belief": last["belief"],
            "dpo_attempts": [
                {k: a[k] for k in ("attempt", "belief", "score_policy_cot", "feedback")} for a in attempts
            ],
            "rejected_cot": last["cot"],
            "rejected_response": last["response"],
            **{f"rejected_score_{m}": s for m, s in last["scores"].items()},
            "model_whisperer": ctx.models["whisperer"].model_name,
            "usage_dpo": usage,
            "dpo_at": now(),
        }
        return columns, usage
