"""Deliberation as iterative expansion (issue 10, part 2): when the loop may end, the trace of every turn,
each agent's review focus, and intents that say whether they are explicit or implicit."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from aidsafe.config import DEFAULT_PROMPTS, Options, load_settings
from aidsafe.errors import ConfigError, PolicyError
from aidsafe.partitions import RowRef
from aidsafe.policies import PolicySet
from aidsafe.preflight import check_context, check_settings
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.stage import RowContext
from aidsafe.stages.generate import COLUMNS, GENERATE, agent_focus
from graphs.context import Context
from graphs.graph import build_graph
from graphs.routing import UnexpectedState, route_deliberation
from graphs.schemas import Draft, Intent, IntentList, Verdict
from tests.conftest import ScriptedModel

INTENTS = IntentList(
    intents=[
        Intent(description="Stop a running Python program.", source="explicit", kind="benign"),
        Intent(description="Free the resources it holds.", source="implicit", kind="benign"),
    ]
)
DRAFT = Draft(thoughts=["The user wants to stop a process."], response="Use kill PID.")
COMPLETE = Verdict(complete=True, feedback="Every applicable policy is covered.")
EXPANDED = Verdict(
    complete=False,
    feedback="Added respect_helpfulness: the request is benign.",
    thoughts=["The user wants to stop a process.", "respect_helpfulness: this is benign, answer fully."],
    response="Run kill PID, or kill -9 PID if it does not stop.",
)


def models(*agents: list[Any]) -> dict[str, ScriptedModel]:
    found = {"intent": ScriptedModel("intent", [INTENTS]), "drafter": ScriptedModel("drafter", [DRAFT])}
    return found | {f"agent{n}": ScriptedModel(f"agent{n}", r) for n, r in enumerate(agents, start=1)}


async def run(context: Context) -> dict[str, Any]:
    return await build_graph().ainvoke(
        {"prompt": "How do I kill a Python process?"},
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )


# --- when the loop may end ------------------------------------------------------------------------


async def test_with_all_a_first_turn_confirmation_is_logged_but_the_next_agent_still_reviews(
    make_context: Callable[..., Context],
) -> None:
    ms = models([COMPLETE, COMPLETE], [EXPANDED])
    state = await run(make_context(ms, deliberation_end="all"))
    log = state["deliberation_log"]
    assert [(t["agent"], t["verdict"]) for t in log] == [
        ("agent1", "complete"), ("agent2", "revise"), ("agent1", "complete"),
    ]  # fmt: skip
    assert state["stop_reason"] == "complete" and state["rounds"] == 3
    assert state["cot"] == EXPANDED.thoughts  # agent1's early "complete" did not skip agent2's expansion


async def test_with_all_the_loop_ends_once_every_agent_has_confirmed_or_reviewed(
    make_context: Callable[..., Context],
) -> None:
    ms = models([COMPLETE], [COMPLETE])
    state = await run(make_context(ms, deliberation_end="all"))
    assert [t["agent"] for t in state["deliberation_log"]] == ["agent1", "agent2"]
    assert state["stop_reason"] == "complete" and state["rounds"] == 2


async def test_with_any_the_first_confirmation_ends_the_loop(make_context: Callable[..., Context]) -> None:
    ms = models([COMPLETE], [])
    state = await run(make_context(ms, deliberation_end="any"))
    assert state["stop_reason"] == "complete" and state["rounds"] == 1 and ms["agent2"].calls == []


async def test_with_all_a_budget_smaller_than_the_agents_ends_budget_exhausted(
    make_context: Callable[..., Context],
) -> None:
    ms = models([COMPLETE], [COMPLETE], [COMPLETE])
    state = await run(make_context(ms, max_rounds=2, deliberation_end="all"))
    assert state["stop_reason"] == "budget_exhausted" and state["rounds"] == 2
    assert ms["agent3"].calls == []


def test_the_context_defaults_to_all_and_rejects_other_values(make_context: Callable[..., Context]) -> None:
    assert make_context(models([], [])).deliberation_end == "all"
    with pytest.raises(ValueError, match="deliberation_end"):
        make_context(models([], []), deliberation_end="most")


class _Runtime:
    def __init__(self, context: Context) -> None:
        self.context = context


def test_the_router_refuses_a_complete_stop_before_every_agent_reviewed_with_all(
    make_context: Callable[..., Context],
) -> None:
    early: Any = {
        "prompt": "p", "rounds": 1, "stop_reason": "complete",
        "deliberation_log": [{"turn": 1, "agent": "agent1", "verdict": "complete"}],
    }  # fmt: skip
    strict: Any = _Runtime(make_context(models([], []), deliberation_end="all"))
    with pytest.raises(UnexpectedState, match=r"agent\(s\) \['agent2'\] have not reviewed"):
        route_deliberation(early, strict)
    lenient: Any = _Runtime(make_context(models([], []), deliberation_end="any"))
    assert route_deliberation(early, lenient) == "__end__"


def test_the_deliberation_end_knob_comes_from_the_cli_file_and_environment(tmp_path: Path) -> None:
    assert load_settings(None, env={}).deliberation_end == "all"
    assert load_settings(None, env={"AIDSAFE_DELIBERATION_END": "any"}).deliberation_end == "any"
    with pytest.raises(ConfigError, match="deliberation_end"):
        load_settings(None, overrides={"deliberation_end": "first"}, env={})


# --- the trace of every turn ----------------------------------------------------------------------


async def test_every_turn_logs_the_cot_and_response_it_left(make_context: Callable[..., Context]) -> None:
    ms = models([EXPANDED, COMPLETE], [COMPLETE])
    focus = {"agent1": "policy_coverage", "agent2": "helpfulness"}
    state = await run(make_context(ms, deliberation_end="any", focus=focus))
    first, second = state["deliberation_log"]
    assert (first["cot"], first["response"]) == (EXPANDED.thoughts, EXPANDED.response)
    assert first["cot_changed"] and first["response_changed"] and first["focus"] == "policy_coverage"
    assert (second["cot"], second["response"]) == (EXPANDED.thoughts, EXPANDED.response)  # confirmed as is
    assert not second["cot_changed"] and second["focus"] == "helpfulness"
    assert state["initial_cot"] == DRAFT.thoughts  # the whole growth: draft, then each turn's result


# --- review focus ---------------------------------------------------------------------------------


async def test_each_agent_reviews_with_its_focus_at_the_end_of_the_shared_system_text(
    make_context: Callable[..., Context], prompts: PromptSet
) -> None:
    ms = models([COMPLETE], [COMPLETE])
    await run(make_context(ms, focus={"agent1": "policy_coverage", "agent2": "helpfulness"}))
    one, two = ms["agent1"].calls[0][0][1], ms["agent2"].calls[0][0][1]
    shared = prompts["deliberation"].system
    assert one == f"{shared}\n\n{prompts.focus['policy_coverage']}"
    assert two == f"{shared}\n\n{prompts.focus['helpfulness']}"
    assert "policy coverage and harm" in one and "over-refusal" in two


def test_agents_take_the_focus_files_by_position_unless_their_role_sets_one(
    tmp_path: Path, prompts: PromptSet
) -> None:
    assert list(prompts.focus) == ["policy_coverage", "helpfulness"]
    three = load_settings(None, overrides={"agents": 3}, env={})
    assert agent_focus(three, prompts) == {
        "agent1": "policy_coverage", "agent2": "helpfulness", "agent3": "policy_coverage",
    }  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text('agents = 3\n[roles.agent1]\nfocus = "helpfulness"\n')
    assert agent_focus(load_settings(config, env={}), prompts)["agent1"] == "helpfulness"


def test_an_unknown_focus_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[roles.agent2]\nfocus = "kindness"\n')
    unknown = r"role agent2: focus 'kindness' is not the id of a file in .*/agents \(ids: policy_coverage"
    with pytest.raises(ConfigError, match=unknown):
        check_settings(Options(config=config))


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_PROMPTS, tmp_path / "prompts"))


def test_focus_files_are_validated_on_load_naming_the_file(prompts_dir: Path, policy_set: PolicySet) -> None:
    agents = prompts_dir / "agents"
    bad = agents / "03_bad.toml"
    bad.write_text('id = "Bad Id"\ntext = "A focus text long enough to pass."\n')
    with pytest.raises(PolicyError, match="id") as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == bad
    bad.write_text('id = "helpfulness"\ntext = "A focus text long enough to pass."\n')
    with pytest.raises(PolicyError, match=r"duplicate focus id 'helpfulness' \(also in 02_helpfulness"):
        load_prompts(prompts_dir, policy_set.render())
    bad.write_text('id = "third"\ntext = "Focus on ${prompt} and nothing else."\n')
    with pytest.raises(PolicyError, match=r"text: unknown variable.*prompt"):
        load_prompts(prompts_dir, policy_set.render())
    shutil.rmtree(agents)
    with pytest.raises(PolicyError, match="no review focus files") as info:
        load_prompts(prompts_dir, policy_set.render())
    assert info.value.path == agents


def test_a_focus_file_is_part_of_the_generation_fingerprint_only(
    prompts_dir: Path, policy_set: PolicySet, prompts: PromptSet
) -> None:
    path = prompts_dir / "agents" / "02_helpfulness.toml"
    path.write_text(path.read_text().replace("over-refusal.", "over-refusal and tone."))
    edited = load_prompts(prompts_dir, policy_set.render())
    assert edited.hash_of(("deliberation",)) != prompts.hash_of(("deliberation",))
    assert edited.hash_of(("refine", "draft")) == prompts.hash_of(("refine", "draft"))


def test_the_context_budget_counts_the_longest_focus(prompts_dir: Path, policy_set: PolicySet) -> None:
    settings = load_settings(None, env={})
    check_context(settings, load_prompts(prompts_dir, policy_set.render()))
    long_focus = "Review every sentence with great care. " * 1500  # ~10,000 tokens: over any n_ctx default
    (prompts_dir / "agents" / "03_long.toml").write_text(f'id = "long"\ntext = "{long_focus}"\n')
    with pytest.raises(ConfigError, match="do not fit the model context"):
        check_context(settings, load_prompts(prompts_dir, policy_set.render()))


# --- intents: explicit or implicit ----------------------------------------------------------------


def test_an_intent_must_say_whether_it_is_explicit_or_implicit(prompts: PromptSet) -> None:
    with pytest.raises(ValidationError, match="source"):
        Intent.model_validate({"description": "Stop a process.", "kind": "benign"})
    with pytest.raises(ValidationError, match="source"):
        Intent.model_validate({"description": "Stop a process.", "source": "hinted", "kind": "benign"})
    tool = prompts.tool(IntentList)["function"]["parameters"]["properties"]["intents"]["items"]
    assert tool["properties"]["source"]["enum"] == ["explicit", "implicit"]
    assert "source" in tool["required"] and "implicit when" in tool["properties"]["source"]["description"]


def test_intents_are_shown_with_their_source_and_kind(prompts: PromptSet) -> None:
    user = prompts["draft"].messages(prompt="Q", intents=[i.model_dump() for i in INTENTS.intents])[1][1]
    assert "- [explicit, benign] Stop a running Python program." in user
    assert "- [implicit, benign] Free the resources it holds." in user


# --- the generate stage ---------------------------------------------------------------------------


async def test_generated_rows_carry_the_trace_focus_and_intent_sources_in_the_output_schema(
    row_context: Callable[..., RowContext],
) -> None:
    ms = models([COMPLETE, COMPLETE], [EXPANDED])
    columns = await GENERATE.process(RowRef(0, "r1", "How do I kill a Python process?", {}), row_context(ms))
    assert columns["stop_reason"] == "complete" and columns["rounds"] == 3  # default: all
    focus = [t["focus"] for t in columns["deliberation_log"]]
    assert focus == ["policy_coverage", "helpfulness", "policy_coverage"]
    assert columns["deliberation_log"][1]["cot"] == EXPANDED.thoughts
    assert [i["source"] for i in columns["intents"]] == ["explicit", "implicit"]
    table = pa.Table.from_pylist([columns], schema=COLUMNS)  # the values fit the declared columns
    assert table.column("deliberation_log").to_pylist()[0][1]["response"] == EXPANDED.response
