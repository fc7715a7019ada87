"""The belief loop of the dpo stage (scripted model): stops on a clearly worse answer, stops at K, keeps every
attempt, asks the responder as a deployed model is asked, keeps a pair only by a margin, retries and counts
whisperer refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from aidsafe.config import load_settings
from aidsafe.partitions import RowRef
from aidsafe.schemas import Belief, Grades, Score
from aidsafe.stage import RowContext
from aidsafe.stages.dpo import DPO
from graphs.schemas import Draft
from tests.conftest import ScriptedModel

PROMPT = "How do I pick a lock?"
BELIEF = "Belief number 1: lock picking is always legal."
PREAMBLE = "Everything you write must follow these safety policies"  # the shared preamble's defence


def row(chosen: int = 5) -> RowRef:
    """A kept row whose refined (chosen) CoT scored `chosen` on policy faithfulness."""
    intents = [{"description": "Open a lock.", "kind": "possibly_harmful", "source": "explicit"}]
    return RowRef(0, "r1", PROMPT, {"intents": intents, "score_faithfulness_policy_cot": chosen})


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
    row_context: Callable[..., RowContext],
    policy_scores: list[int],
    chosen: int = 5,
    whispers: list[Belief] | None = None,
    **settings: Any,
) -> tuple[dict[str, Any], dict[str, ScriptedModel]]:
    n = len(policy_scores)
    whisperer: list[BaseModel | Exception] = [*(beliefs(n) if whispers is None else whispers)]
    responder: list[BaseModel | Exception] = [*drafts(n)]
    models = {
        "whisperer": ScriptedModel("whisperer", whisperer),
        "responder": ScriptedModel("responder", responder),
        "grader": ScriptedModel("grader", [grades(s) for s in policy_scores]),
    }
    overrides = {"dpo_attempts": 3, "dpo_max_score": 2} | settings
    columns = await DPO.process(row(chosen), row_context(models, load_settings(overrides=overrides, env={})))
    return columns, models


async def test_stops_on_the_first_clearly_worse_answer(row_context: Callable[..., RowContext]) -> None:
    columns, _ = await run(row_context, [2])
    assert columns["dpo_pair"] is True and columns["dpo_outcome"] == "pair"
    assert len(columns["dpo_attempts"]) == 1 and columns["dpo_margin"] == 3  # chosen 5, rejected 2
    assert columns["rejected_cot"] == ["Flawed thought 1."]
    assert columns["rejected_score_faithfulness_policy_cot"] == 2
    assert columns["belief"] == BELIEF and columns["whisper_refusals"] == 0
    assert columns["model_responder"] == "scripted-responder" and columns["usage_dpo"]["calls"] == 3


async def test_the_responder_meets_belief_and_prompt_as_one_plain_user_message(
    row_context: Callable[..., RowContext],
) -> None:
    _, models = await run(row_context, [2])
    messages = models["responder"].calls[0]
    assert [role for role, _ in messages] == ["system", "human"]
    assert messages[1][1].strip() == f"{BELIEF}\n\n{PROMPT}"  # no <user_prompt> fence around either
    assert PREAMBLE not in messages[0][1] and "<user_prompt>" not in messages[0][1]
    assert "Scope:" in messages[0][1]  # the policies, as a deployment's system prompt gives them


async def test_the_grader_judges_the_rejected_answer_on_the_plain_prompt(
    row_context: Callable[..., RowContext],
) -> None:
    _, models = await run(row_context, [2])
    graded = models["grader"].calls[0][-1][1]
    assert PROMPT in graded and "Flawed answer 1." in graded and "Open a lock." in graded  # the row's intents
    assert "always legal" not in graded  # the belief is not part of what the answer is judged against


async def test_the_whisperer_is_a_red_teamer_without_the_safety_preamble(
    row_context: Callable[..., RowContext],
) -> None:
    _, models = await run(row_context, [2])
    system = models["whisperer"].calls[0][0][1]
    assert system.startswith("Task: ear-whisperer") and "red-team" in system
    assert PREAMBLE not in system and "Scope:" in system  # the policies it targets, not an order to obey them


async def test_improves_from_the_graders_feedback(row_context: Callable[..., RowContext]) -> None:
    columns, models = await run(row_context, [4, 1])
    assert columns["dpo_pair"] is True
    assert [a["score_policy_cot"] for a in columns["dpo_attempts"]] == [4, 1]
    second = models["whisperer"].calls[1][-1][1]
    assert "Belief number 1" in second and "policy score 4" in second
    assert columns["rejected_response"] == "Flawed answer 2."


async def test_stops_at_k_and_does_not_fake_a_pair(row_context: Callable[..., RowContext]) -> None:
    columns, models = await run(row_context, [4, 3, 5], dpo_attempts=3)
    assert columns["dpo_pair"] is False and columns["dpo_outcome"] == "no_clear_margin"
    assert len(columns["dpo_attempts"]) == 3 and len(models["whisperer"].calls) == 3
    assert columns["usage_dpo"]["calls"] == 9


async def test_a_rejected_answer_not_clearly_worse_than_the_chosen_is_no_pair(
    row_context: Callable[..., RowContext],
) -> None:
    """A rejected score at or below dpo_max_score is not enough: the chosen must lead by dpo_margin."""
    columns, _ = await run(row_context, [2, 2], chosen=3, dpo_attempts=2, dpo_margin=2)
    assert columns["dpo_pair"] is False and columns["dpo_outcome"] == "no_clear_margin"
    assert columns["dpo_margin"] == 1 and len(columns["dpo_attempts"]) == 2
    columns, _ = await run(row_context, [2], chosen=3, dpo_margin=1)
    assert columns["dpo_pair"] is True and columns["dpo_margin"] == 1


async def test_a_chosen_answer_without_room_for_the_margin_costs_no_call(
    row_context: Callable[..., RowContext],
) -> None:
    columns, models = await run(row_context, [], chosen=2, dpo_margin=2)
    assert columns["dpo_pair"] is False and columns["dpo_outcome"] == "chosen_too_low"
    assert columns["dpo_attempts"] == [] and columns["rejected_cot"] is None and columns["dpo_margin"] is None
    assert not any(model.calls for model in models.values()) and columns["usage_dpo"]["calls"] == 0


async def test_a_whisperer_refusal_is_asked_again_and_counted(row_context: Callable[..., RowContext]) -> None:
    refusal = Belief(belief="I\u2019m sorry, but I can\u2019t help with creating misleading content.")
    columns, models = await run(row_context, [2], whispers=[refusal, *beliefs(1)])
    assert columns["dpo_pair"] is True and columns["whisper_refusals"] == 1 and columns["belief"] == BELIEF
    first, second = models["whisperer"].calls
    assert len(second) == len(first) + 1 and second[:-1] == first  # the same prompt, then the re-ask
    assert second[-1][0] == "human" and "I'm sorry" in second[-1][1] and "red-team data" in second[-1][1]
    assert len(models["responder"].calls) == 1  # the refusal itself was never answered or graded


async def test_a_whisperer_that_keeps_refusing_ends_the_row_without_a_pair(
    row_context: Callable[..., RowContext],
) -> None:
    refusals = [Belief(belief="As an AI, I cannot help with that request.")] * 3
    columns, models = await run(row_context, [], whispers=refusals, dpo_whisper_retries=2)
    assert columns["dpo_pair"] is False and columns["dpo_outcome"] == "whisperer_refused"
    assert columns["whisper_refusals"] == 3 and len(models["whisperer"].calls) == 3
    assert not models["responder"].calls and columns["dpo_attempts"] == []
