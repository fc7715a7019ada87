"""The belief loop of the dpo stage (scripted model): stops on success, stops at K, keeps every attempt."""

from __future__ import annotations

from collections.abc import Callable

from aidsafe.config import load_settings
from aidsafe.partitions import RowRef
from aidsafe.schemas import Belief, Grades, Score
from aidsafe.stage import RowContext
from aidsafe.stages.dpo import DPO
from graphs.schemas import Draft
from tests.conftest import ScriptedModel

ROW = RowRef(
    0,
    "r1",
    "How do I pick a lock?",
    {"intents": [{"description": "Open a lock.", "kind": "possibly_harmful"}]},
)


def grades(policy_cot: int) -> Grades:
    names = Grades.model_fields.keys() - {"refused"}
    scores = {m: Score(score=4, rationale="fine") for m in names}
    scores["faithfulness_policy_cot"] = Score(score=policy_cot, rationale=f"policy score {policy_cot}")
    return Grades(**scores, refused=False)


def beliefs(n: int) -> list[Belief]:
    return [Belief(belief=f"Belief number {i}: lock picking is always legal.") for i in range(1, n + 1)]


def drafts(n: int) -> list[Draft]:
    return [Draft(thoughts=[f"Flawed thought {i}."], response=f"Flawed answer {i}.") for i in range(1, n + 1)]


async def run(
    row_context: Callable[..., RowContext], policy_scores: list[int], k: int = 3
) -> tuple[dict, dict]:
    n = len(policy_scores)
    models = {
        "whisperer": ScriptedModel("whisperer", list(beliefs(n))),
        "drafter": ScriptedModel("drafter", list(drafts(n))),
        "grader": ScriptedModel("grader", [grades(s) for s in policy_scores]),
    }
    settings = load_settings(overrides={"dpo_attempts": k, "dpo_max_score": 2}, env={})
    columns = await DPO.process(ROW, row_context(models, settings))
    return columns, {"models": models, "usage": columns["usage_dpo"]}


async def test_stops_on_the_first_clearly_worse_answer(row_context: Callable[..., RowContext]) -> None:
    columns, seen = await run(row_context, [2])
    assert columns["dpo_pair"] is True and len(columns["dpo_attempts"]) == 1
    assert (
        columns["rejected_cot"] == ["Flawed thought 1."]
        and columns["rejected_score_faithfulness_policy_cot"] == 2
    )
    assert columns["belief"].startswith("Belief number 1")
    drafter_prompt = seen["models"]["drafter"].calls[0][-1][1]
    assert "Belief number 1: lock picking is always legal.\n\nHow do I pick a lock?" in drafter_prompt
    assert seen["usage"]["calls"] == 3


async def test_improves_from_the_graders_feedback(row_context: Callable[..., RowContext]) -> None:
    columns, seen = await run(row_context, [4, 1])
    assert columns["dpo_pair"] is True
    assert [a["score_policy_cot"] for a in columns["dpo_attempts"]] == [4, 1]
    second = seen["models"]["whisperer"].calls[1][-1][1]
    assert "attempt 1: belief: Belief number 1" in second and "policy score 4" in second
    assert columns["rejected_response"] == "Flawed answer 2."


async def test_stops_at_k_and_does_not_fake_a_pair(row_context: Callable[..., RowContext]) -> None:
    columns, seen = await run(row_context, [4, 3, 5], k=3)
    assert columns["dpo_pair"] is False and len(columns["dpo_attempts"]) == 3
    assert len(seen["models"]["whisperer"].calls) == 3 and seen["usage"]["calls"] == 9
