"""`aidsafe traces` and `aidsafe export sets`: the recipe file, the configurations' roles, which traces are
kept, and the flow against the OpenAI-compatible test server (a configuration per temperature: copies
dropped, a failing configuration in the failures table while the row keeps the rest, reruns and retries), the
report and the set export loaded in `datasets`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aidsafe.cli import main
from aidsafe.config import DEFAULT_TRACE_CONFIGS, Options, load_settings
from aidsafe.errors import ConfigError, PolicyError
from aidsafe.schemas import METRICS
from aidsafe.set_export import export_sets, set_record
from aidsafe.trace_recipe import TraceRecipe, configurations, load_recipe, trace_settings
from aidsafe.trace_selection import Selection, select
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script, grades

RECIPE = """
similarity = 0.8
[[configuration]]
name = "cold"
focus = ["policy_coverage"]
temperature = 0.2
[[configuration]]
name = "cold-copy"
focus = ["helpfulness"]
temperature = 0.2
[[configuration]]
name = "warm"
focus = ["policy_coverage", "helpfulness"]
temperature = 0.7
[[configuration]]
name = "broken"
focus = ["helpfulness"]
temperature = 1.0
"""
# What the drafter thinks first, by the temperature of its configuration.
THOUGHT = {
    0.2: "The question asks how bread rises and the policy on helpfulness allows a full answer.",
    0.7: "Yeast ferments sugars into carbon dioxide, which is why a warm kitchen makes the dough grow fast.",
    1.0: "Gluten strands trap the gas like tiny balloons; kneading builds them and an oven sets them firm.",
}


def recipe_file(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def trace(name: str, score: int, text: str) -> dict[str, Any]:
    return {"configuration": name, "scores": dict.fromkeys(METRICS, score), "cot": [text], "response": "R."}


def test_the_default_recipe_has_four_configurations_with_focus_files_that_exist() -> None:
    recipe = load_recipe(DEFAULT_TRACE_CONFIGS)
    focus = {
        p.stem.split("_", 1)[1] for p in (DEFAULT_TRACE_CONFIGS.parents[1] / "prompts" / "agents").iterdir()
    }
    assert len(recipe.configuration) == 4 and {f for c in recipe.configuration for f in c.focus} <= focus


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (RECIPE.replace('name = "cold-copy"', 'name = "cold"'), "names must be unique"),
        (RECIPE + "[min_score]\nclarity = 3\n", "unknown metric 'clarity'"),
        (RECIPE.replace("temperature = 0.7", "temperature = 7"), "configuration.2.temperature"),
        ("similarity = 0.8\n", "configuration: Field required"),
    ],
)
def test_a_bad_recipe_names_the_file_and_the_field(tmp_path: Path, text: str, reason: str) -> None:
    path = recipe_file(tmp_path, text)
    with pytest.raises(PolicyError, match=str(path)) as raised:
        load_recipe(path)
    assert reason in str(raised.value)


def test_more_traces_than_configurations_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(overrides={"trace_configs": recipe_file(tmp_path), "trace_count": 5}, env={})
    with pytest.raises(ConfigError, match=r"--traces 5: .* lists only 4"):
        configurations(settings)


def test_each_configuration_gets_its_own_drafter_and_agents_with_its_temperature(tmp_path: Path) -> None:
    settings = load_settings(overrides={"trace_configs": recipe_file(tmp_path), "trace_count": 3}, env={})
    configured = trace_settings(settings)
    assert configured.roles["agent2@warm"].temperature == 0.7
    assert configured.roles["drafter@cold"].temperature == 0.2
    assert "agent1@broken" not in configured.roles  # beyond --traces 3
    assert configured.roles["agent1"] == settings.roles["agent1"]  # the run's own roles are untouched


def test_traces_below_the_minimum_or_copies_of_a_better_one_are_not_kept() -> None:
    recipe = TraceRecipe.model_validate({"configuration": [{"name": "a", "focus": ["x"]}]})
    rule = Selection(recipe.min_score, recipe.similarity, recipe.ngram)
    text = "one two three four five six seven eight nine ten"
    traces = [
        trace("low", 3, "completely different words here"),
        trace("copy", 4, text),
        trace("best", 5, text),
        trace("other", 4, "a wholly unrelated chain about bread and yeast"),
    ]
    selected, passed, diversity = select(traces, rule)
    reasons = {t["configuration"]: t["dropped"] for t in selected}
    assert (
        reasons["low"].startswith("below min_score: ") and "faithfulness_policy_cot 3 < 4" in reasons["low"]
    )
    assert reasons["copy"] == "near-duplicate of best (Jaccard 1.00)"  # the better of two copies stays
    assert reasons["best"] is None and reasons["other"] is None and passed == 3
    assert [t["kept"] for t in selected] == [False, False, True, True] and diversity == pytest.approx(1.0)


def test_a_set_record_shuffles_only_the_kept_traces_and_never_joins_them() -> None:
    traces = [{**trace(f"c{i}", 4, f"thought {i}"), "kept": i != 2} for i in range(6)]
    row = {"id": "p1", "prompt": "Q?", "traces": traces, "traces_diversity": 0.5}
    record = set_record(row, seed=0)
    assert record is not None and record["traces_count"] == 5
    assert sorted(t["configuration"] for t in record["traces"]) == ["c0", "c1", "c3", "c4", "c5"]
    assert [t["configuration"] for t in record["traces"]] != ["c0", "c1", "c3", "c4", "c5"]  # seeded shuffle
    assert set(record["traces"][0]) == {"cot", "response", "configuration", "scores"}
    assert set_record({**row, "traces": [{**t, "kept": False} for t in traces]}, seed=0) is None


def bread(rows: int) -> list[dict[str, str]]:
    return [{"id": f"b{i}", "prompt": f"How does bread rise, part {i}?"} for i in range(rows)]


def by_temperature(broken: list[bool]) -> Callable[[Request], Reply]:
    """The default backend, but the draft depends on the temperature, and at 1.0 it is invalid while
    broken[0] holds."""

    def script(request: Request) -> Reply:
        if request.tool != "Draft":
            return default_script(request)
        temperature = float(request.body["temperature"])
        if temperature == 1.0 and broken[0]:
            return Reply("not json")
        thoughts = [THOUGHT[temperature], "Policy respect_helpfulness applies."]
        return Reply({"thoughts": thoughts, "response": f"An answer at {temperature}."})

    return script


def run_traces(
    out: Path, source: Path, server: FakeOpenAI, recipe: Path, retry: bool = False, count: int = 4
) -> list[str]:
    from flows.traces import traces

    options = Options(base_url=server.base_url, model="m", trace_configs=recipe, trace_count=count,
                      max_failed_fraction=0.5, max_rounds=2, structured_retries=0)  # fmt: skip
    return traces(str(out), str(source), options, retry)


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_the_flow_keeps_distinct_traces_records_failed_configurations_and_retries_them(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    broken = [True]
    server = fake_openai(by_temperature(broken))
    source = write_partition(tmp_path / "in" / "part-0.parquet", bread(2))
    out, recipe = tmp_path / "out", recipe_file(tmp_path)
    run_traces(out, source, server, recipe)
    rows = pd.read_parquet(out / "traces").sort_values("id")
    assert list(rows["traces_made"]) == [3, 3] and list(rows["traces_kept"]) == [2, 2]
    assert [list(f) for f in rows["traces_failed"]] == [["broken"], ["broken"]]
    first = {t["configuration"]: t for t in rows["traces"].iloc[0]}
    assert first["cold-copy"]["dropped"].startswith("near-duplicate of cold") and first["warm"]["kept"]
    assert 0 < rows["traces_diversity"].iloc[0] <= 1
    intents = [r for r in server.requests if r.tool == "IntentList"]
    assert len(intents) == 2  # one decomposition per prompt, shared by its configurations
    failures = pd.read_parquet(out / "failures" / "traces")
    assert sorted(failures["id"]) == ["b0", "b1"] and set(failures["stage"]) == {"broken/draft"}
    report = (out / "report" / "traces.md").read_text()
    assert "| traces kept (no near-duplicates) | 4 |" in report and "| broken | 0 | 0 | 0 | 2 |" in report
    summary = json.loads((out / "summary" / "traces.json").read_text())
    assert (summary["rows_ok"], summary["rows_failed"], summary["parts_failed"]) == (2, 0, 2)

    asked = len(server.requests)
    run_traces(out, source, server, recipe)  # unchanged: nothing to do, the failures are still listed
    assert len(server.requests) == asked and len(pd.read_parquet(out / "failures" / "traces")) == 2
    broken[0] = False
    run_traces(out, source, server, recipe, retry=True)  # the broken configuration works now
    rows = pd.read_parquet(out / "traces")
    assert list(rows["traces_made"]) == [4, 4] and [list(f) for f in rows["traces_failed"]] == [[], []]
    assert len(pd.read_parquet(out / "failures" / "traces")) == 0


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_a_prompt_whose_every_configuration_fails_is_one_failed_row_with_every_reason(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(by_temperature([True]))
    source = write_partition(tmp_path / "in" / "part-0.parquet", [{"id": "x", "prompt": "Q?"}])
    only_broken = (
        RECIPE.split("[[configuration]]")[0] + "[[configuration]]" + RECIPE.split("[[configuration]]")[4]
    )
    with pytest.raises(Exception, match="traces: 1 of 1 rows failed"):
        run_traces(tmp_path / "out", source, server, recipe_file(tmp_path, only_broken), count=1)
    failures = pd.read_parquet(tmp_path / "out" / "failures" / "traces")
    assert list(failures["stage"]) == ["traces"] and "broken: draft:" in failures["message"].iloc[0]


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_the_set_export_loads_in_datasets_with_one_unordered_set_per_prompt(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    from datasets import load_dataset

    server = fake_openai(by_temperature([False]))
    source = write_partition(tmp_path / "in" / "part-0.parquet", bread(4))
    out = tmp_path / "out"
    run_traces(out, source, server, recipe_file(tmp_path))
    done = export_sets(out, None, ((0.5, 0.25, 0.25), 0))
    assert sum(done.counts.values()) == 4
    card = (done.target / "README.md").read_text()
    assert "unordered set" in card and "| 3 | 4 |" in card  # every prompt: three distinct kept traces
    loaded = load_dataset(str(done.target))
    train = loaded["train"][0]
    assert len(train["traces"]) == 3 and set(train["traces"][0]) == {
        "cot",
        "response",
        "configuration",
        "scores",
    }
    assert "messages" not in loaded["train"].column_names


@pytest.mark.usefixtures("clean_env")
def test_the_cli_refuses_an_unknown_focus_in_the_recipe_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recipe_file(
        tmp_path, RECIPE.replace('focus = ["helpfulness"]\ntemperature = 1.0', 'focus = ["tone"]')
    )
    code = main(
        ["traces", "--input", "data/sample", "--output", str(tmp_path / "o"), "--trace-configs", str(path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "configuration broken: focus 'tone'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_export_min_score_none_selects_the_stored_traces_again_without_a_model(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    scripted = by_temperature([False])

    def low_grades(request: Request) -> Reply:
        return Reply(grades(3)) if request.tool == "Grades" else scripted(request)

    server = fake_openai(low_grades)
    out = tmp_path / "out"
    run_traces(
        out, write_partition(tmp_path / "in" / "part-0.parquet", bread(2)), server, recipe_file(tmp_path)
    )
    assert list(pd.read_parquet(out / "traces")["traces_kept"]) == [0, 0]  # policy faithfulness 3 < 4
    asked = len(server.requests)
    assert main(["export", "sets", "--output", str(out)]) == 2
    assert "`--min-score none` keeps every distinct trace" in capsys.readouterr().err
    assert main(["export", "sets", "--output", str(out), "--min-score", "none", "--split", "1,0,0"]) == 0
    exported = pd.read_parquet(out / "export" / "sets" / "train.parquet")
    assert list(exported["traces_count"]) == [3, 3] and len(server.requests) == asked  # copies still dropped
    assert "minimum scores: none" in (out / "export" / "sets" / "README.md").read_text()
