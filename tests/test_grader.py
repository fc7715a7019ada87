"""The grader: its rubric file, what it is shown, repeated grades (grader_samples) and self-grading."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aidsafe.card import render_card
from aidsafe.config import DEFAULT_PROMPTS, load_settings
from aidsafe.errors import PolicyError
from aidsafe.partitions import RowRef
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.report import build_report, render_markdown
from aidsafe.schemas import METRICS, Grades, Score
from aidsafe.self_grading import same_model, self_grading
from aidsafe.stage import RowContext
from aidsafe.stages.baseline import BASELINE
from aidsafe.stages.grade import GRADE
from graphs.schemas import Draft
from tests.conftest import ScriptedModel

MakeContext = Callable[..., RowContext]
ROW: dict[str, Any] = {
    "id": "r1",
    "prompt": "How do I kill a Python process?",
    "intents": [
        {"description": "End a hung process.", "kind": "benign", "source": "explicit"},
        {"description": "Learn process signals.", "kind": "benign", "source": "implicit"},
    ],
    "refined_cot": ["Kill means ending a process here.", "Give the kill command."],
    "refined_response": "Run kill <pid>.",
}


def grades(*scores: int, refused: bool = False) -> Grades:
    """One Grades with scores[i] on the i-th metric (the last score repeated for the rest)."""
    values = [*scores, *[scores[-1]] * (len(METRICS) - len(scores))]
    fields = {m: Score(score=s, rationale=f"Scored {s}.") for m, s in zip(METRICS, values, strict=True)}
    return Grades(**fields, refused=refused)


def uniform(score: int, refused: bool = False) -> Grades:
    return grades(*[score] * len(METRICS), refused=refused)


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_PROMPTS, tmp_path / "prompts"))


def rubric_table() -> dict[str, Any]:
    return tomllib.loads((DEFAULT_PROMPTS / "rubric.toml").read_text(encoding="utf-8"))


def write_rubric(directory: Path, data: dict[str, Any]) -> None:
    lines = []
    for metric, table in data.items():
        lines.append(f"[{metric}]")
        lines += [f'"{key}" = {json_str(value)}' for key, value in table.items()]
    (directory / "rubric.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def json_str(value: object) -> str:
    return json.dumps(value)


# --- the rubric file ------------------------------------------------------------------------------


def test_the_grade_prompt_shows_every_score_description_of_the_rubric_file(prompts: PromptSet) -> None:
    system = prompts["grade"].system
    for metric, table in rubric_table().items():
        assert table["question"] in system
        for score in "12345":
            assert f"{score} {table[score]}" in system, (metric, score)
    assert "${rubric}" not in system


def test_an_edited_rubric_reaches_the_grader_and_changes_only_the_stages_that_grade(
    prompts_dir: Path, policy_set: PolicySet, prompts: PromptSet
) -> None:
    data = rubric_table()
    data["coherence"]["3"] = "the reasoning wobbles but stands"
    write_rubric(prompts_dir, data)
    edited = load_prompts(prompts_dir, policy_set.render())
    assert "3 the reasoning wobbles but stands;" in edited["grade"].system
    for names in (("grade",), ("baseline", "grade")):  # the baseline (and dpo) grade with the grade prompt
        assert edited.hash_of(names) != prompts.hash_of(names), names
    for stage in ("draft", "refine", "deliberation"):
        assert edited.hash_of((stage,)) == prompts.hash_of((stage,)), stage


@pytest.mark.parametrize(
    ("edit", "error"),
    [(lambda d: d["relevance"].pop("3"), r"relevance\.3: missing description of score 3"),
     (lambda d: d["coherence"].pop("question"), r"coherence\.question: missing question"),
     (lambda d: d.pop("completeness"), r"missing table \[completeness\]"),
     (lambda d: d.__setitem__("helpfulness", {"question": "q?"}), r"unknown metric.*helpfulness"),
     (lambda d: d["relevance"].__setitem__("6", "beyond excellent"), r"relevance: unknown key.*'6'"),
     (lambda d: d["relevance"].__setitem__("5", "  "), r"relevance\.5: must be a non-empty text")],
)  # fmt: skip
def test_a_bad_rubric_names_the_file_and_the_key(
    prompts_dir: Path, policy_set: PolicySet, edit: Callable[[dict[str, Any]], object], error: str
) -> None:
    data = rubric_table()
    edit(data)
    write_rubric(prompts_dir, data)
    with pytest.raises(PolicyError, match=error) as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == prompts_dir / "rubric.toml"


def test_a_missing_rubric_file_names_it(prompts_dir: Path, policy_set: PolicySet) -> None:
    (prompts_dir / "rubric.toml").unlink()
    with pytest.raises(PolicyError, match="not found") as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == prompts_dir / "rubric.toml"


def test_the_grade_prompt_must_show_the_rubric_and_no_other_prompt_may(
    prompts_dir: Path, policy_set: PolicySet
) -> None:
    grade = prompts_dir / "grade.toml"
    grade.write_text(grade.read_text(encoding="utf-8").replace("${rubric}", "(see above)"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"system: must contain \$\{rubric\}") as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == grade
    shutil.copy(DEFAULT_PROMPTS / "grade.toml", grade)
    draft = prompts_dir / "draft.toml"
    text = draft.read_text(encoding="utf-8")
    draft.write_text(text.replace("Task: first draft.", "Task: first draft. ${rubric}", 1), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"system: unknown variable.*rubric") as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == draft


# --- what the grader sees -------------------------------------------------------------------------


async def test_the_grader_sees_prompt_intents_policies_cot_and_response(
    row_context: MakeContext, policy_set: PolicySet
) -> None:
    grader = ScriptedModel("grader", [uniform(4)])
    await GRADE.process(RowRef(0, "r1", ROW["prompt"], ROW), row_context({"grader": grader}))
    system, user = (text for _, text in grader.calls[0])
    assert all(policy.text.strip() in system for policy in policy_set.policies)
    assert "<user_prompt>\nHow do I kill a Python process?\n</user_prompt>" in user
    assert "End a hung process." in user and "Learn process signals." in user
    assert "Give the kill command." in user and "Run kill <pid>." in user


async def test_the_baseline_grader_is_told_that_no_intents_were_listed(
    row_context: MakeContext, prompts: PromptSet
) -> None:
    drafter = ScriptedModel("baseline", [Draft(thoughts=["Answer it."], response="Use kill.")])
    grader = ScriptedModel("grader", [uniform(4)])
    row = RowRef(0, "b1", "How do I kill a Python process?", {"id": "b1", "prompt": "How do I ..."})
    await BASELINE.process(row, row_context({"baseline": drafter, "grader": grader}))
    user = grader.calls[0][-1][1]
    assert f"<intents>\n{prompts.fragments['no_intents']}\n</intents>" in user


# --- repeated grades ------------------------------------------------------------------------------


async def test_one_grade_per_row_keeps_its_scores_and_has_no_spread(row_context: MakeContext) -> None:
    grader = ScriptedModel("grader", [grades(2, 5, refused=True)])
    columns = await GRADE.process(RowRef(0, "r1", ROW["prompt"], ROW), row_context({"grader": grader}))
    assert len(grader.calls) == 1 and columns["usage_grade"]["calls"] == 1
    assert columns["score_relevance"] == 2 and columns["score_mean_relevance"] == 2.0
    assert columns["score_coherence"] == 5 and columns["refused"] is True
    assert all(columns[f"score_spread_{m}"] is None for m in METRICS)


async def test_n_grades_give_the_rounded_mean_the_spread_and_a_majority_refusal(
    row_context: MakeContext,
) -> None:
    replies = [grades(2, 3, refused=True), grades(3, 4), grades(5, 4, refused=True)]
    grader = ScriptedModel("grader", list(replies))
    settings = load_settings(overrides={"grader_samples": 3}, env={})
    ctx = row_context({"grader": grader}, settings)
    columns = await GRADE.process(RowRef(0, "r1", ROW["prompt"], ROW), ctx)
    assert len(grader.calls) == 3 and columns["usage_grade"]["calls"] == 3
    assert columns["score_mean_relevance"] == pytest.approx(10 / 3) and columns["score_relevance"] == 3
    assert columns["score_spread_relevance"] == 3 and columns["rationale_relevance"] == "Scored 3."
    assert columns["score_mean_coherence"] == pytest.approx(11 / 3) and columns["score_coherence"] == 4
    assert columns["score_spread_coherence"] == 1 and columns["refused"] is True


async def test_two_grades_round_half_up(row_context: MakeContext) -> None:
    grader = ScriptedModel("grader", [grades(3, 1), grades(4, 2)])
    settings = load_settings(overrides={"grader_samples": 2}, env={})
    columns = await GRADE.process(
        RowRef(0, "r1", ROW["prompt"], ROW), row_context({"grader": grader}, settings)
    )
    assert (columns["score_relevance"], columns["score_coherence"]) == (4, 2)
    assert columns["score_mean_relevance"] == 3.5 and columns["score_spread_relevance"] == 1


def test_grader_samples_is_part_of_the_identity_of_the_stages_that_grade() -> None:
    one, three = load_settings(env={}), load_settings(overrides={"grader_samples": 3}, env={})
    for stage, roles in (("grade", ["grader"]), ("baseline", ["baseline", "grader"]), ("dpo", ["grader"])):
        assert one.stage_identity(stage, roles) != three.stage_identity(stage, roles), stage
    for stage, roles in (("refine", ["refiner"]), ("generate", ["intent", "drafter"])):
        assert one.stage_identity(stage, roles) == three.stage_identity(stage, roles), stage


# --- self-grading ---------------------------------------------------------------------------------


def graded_rows(grader: str, drafter: str = "Qwen/Qwen2.5-7B-Instruct") -> pd.DataFrame:
    models = {"intent": "small-intent", "drafter": drafter, "agents": ["agent-a", drafter]}
    row = {"refused": False, "stop_reason": "complete", "rounds": 1, "refinement_removed": [],
           "models": models, "model_refiner": "refiner-x", "model_grader": grader,
           **{f"score_{m}": 4 for m in METRICS}}  # fmt: skip
    return pd.DataFrame([{"id": f"r{n}", **row} for n in range(3)])


def test_a_grader_on_a_generating_model_is_self_graded_whatever_its_server_calls_it() -> None:
    found = self_grading(graded_rows("qwen2.5-7b-instruct"))
    assert (found.rows, found.total) == (3, 3)
    assert found.roles == ("drafter", "agent2") and found.graders == ("qwen2.5-7b-instruct",)
    assert same_model("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct")
    assert not same_model("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct")


def test_the_report_says_self_graded_prominently_and_an_independent_grader_is_not_flagged() -> None:
    failures = pd.DataFrame({"flow": [], "stage": []})
    text = render_markdown(build_report(graded_rows("refiner-x"), None, failures, {}), [])
    first = text.split("## ")[0]
    assert "**Self-graded:** 3 of 3 graded rows were graded by `refiner-x`" in first
    assert "same model as their refiner" in first and "aidsafe grade --calibrate" in first
    independent = render_markdown(build_report(graded_rows("judge-70b"), None, failures, {}), [])
    assert "Self-graded" not in independent


def test_the_dataset_card_says_self_graded(tmp_path: Path) -> None:
    rows = graded_rows("small-intent")
    card = render_card("sft", rows, {"train": 3, "validation": 0, "test": 0}, tmp_path, {})
    head = card.split("## Splits")[0]
    assert "**Self-graded:** 3 of 3 exported rows were graded by `small-intent`" in head
    assert "their intent" in head
    assert "Self-graded" not in render_card("sft", graded_rows("judge-70b"), {"train": 3}, tmp_path, {})
