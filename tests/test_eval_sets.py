"""The evaluation data shipped in data/eval/ (scripts/make_eval_sets.py, documented in data/README.md): the
columns, ids and labels, the counts, no overlap with data/train, jailbreak rows that name their source and
transform, and utility items whose answers are letters of their choices."""

from __future__ import annotations

import pandas as pd
import pytest

from aidsafe import jailbreaks, mcq
from aidsafe.config import PROJECT_ROOT
from aidsafe.decontaminate import EvalIndex, find_overlap, load_eval_sets, normalise

DATA = PROJECT_ROOT / "data"
SETS = ("xstest", "advbench", "jailbreak", "utility")
BASE = ["id", "prompt", "label", "set", "category"]
EXTRA = {
    "xstest": ["focus", "note"],
    "advbench": [],
    "jailbreak": ["transform", "source_id", "source_prompt"],
    "utility": ["question", "choices", "answer", "source_id"],
}
COUNTS = {
    "xstest": {"safe": 250, "unsafe": 200},
    "advbench": {"unsafe": 100},
    "jailbreak": {"unsafe": 1500},
    "utility": {"safe": 40},
}  # as documented in data/README.md


@pytest.fixture(scope="module")
def sets() -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(DATA / "eval" / f"{name}.parquet") for name in SETS}


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_parquet(DATA / "train")


def test_every_set_is_one_parquet_file_and_nothing_else_is_in_the_directory() -> None:
    assert sorted(p.name for p in (DATA / "eval").iterdir()) == sorted(f"{n}.parquet" for n in SETS)


@pytest.mark.parametrize("name", SETS)
def test_each_set_has_the_documented_columns_labels_and_counts(
    sets: dict[str, pd.DataFrame], name: str
) -> None:
    frame = sets[name]
    assert list(frame.columns) == BASE + EXTRA[name]
    assert (frame["set"] == name).all()
    assert frame["label"].value_counts().to_dict() == COUNTS[name]
    for column in ("id", "prompt", "category"):
        assert frame[column].map(lambda v: isinstance(v, str) and v.strip() != "").all(), column


def test_ids_are_unique_across_all_sets(sets: dict[str, pd.DataFrame]) -> None:
    ids = pd.concat([frame["id"] for frame in sets.values()])
    assert ids.is_unique and len(ids) == sum(sum(c.values()) for c in COUNTS.values())


def test_xstest_set_is_data_xstest_with_its_type_as_category(sets: dict[str, pd.DataFrame]) -> None:
    source = pd.read_parquet(DATA / "xstest")
    merged = sets["xstest"].merge(source, on="id", suffixes=("", "_src"))
    assert len(merged) == 450 and (merged["prompt"] == merged["prompt_src"]).all()
    assert (merged["label"] == merged["label_src"]).all() and (merged["category"] == merged["type"]).all()


def test_advbench_set_is_the_held_out_behaviours_none_of_them_in_train(
    sets: dict[str, pd.DataFrame], train: pd.DataFrame
) -> None:
    held = sets["advbench"]
    assert (
        held["id"].str.fullmatch(r"advbench-\d{3}").all() and (held["category"] == "harmful_behaviour").all()
    )
    in_train = set(train.loc[train["source"] == "advbench", "id"])
    assert not set(held["id"]) & in_train and len(in_train | set(held["id"])) == 520
    assert not {normalise(p) for p in held["prompt"]} & {normalise(p) for p in train["prompt"]}


def test_train_overlaps_none_of_the_declared_evaluation_sets(train: pd.DataFrame) -> None:
    index = load_eval_sets()
    assert {"xstest", "advbench", "jailbreak", "utility"} <= set(index.descriptions)
    assert find_overlap(index, train["prompt"].tolist()).matches == {}


def test_train_shares_no_utility_question_even_a_short_one(
    sets: dict[str, pd.DataFrame], train: pd.DataFrame
) -> None:
    questions = EvalIndex(DATA / "eval", ngram=13, min_words=3, descriptions={})
    for ident, question in zip(sets["utility"]["id"], sets["utility"]["question"], strict=True):
        questions.add("utility", ident, question)
    assert find_overlap(questions, train["prompt"].tolist()).matches == {}
    used = set(train.loc[train["source"] == "dolly", "id"])
    assert not used & set(sets["utility"]["source_id"])


def test_every_jailbreak_row_names_its_transform_and_an_existing_unsafe_source(
    sets: dict[str, pd.DataFrame],
) -> None:
    rows = sets["jailbreak"]
    sources = pd.concat([sets["xstest"], sets["advbench"]]).set_index("id")
    unsafe = set(sources.index[sources["label"] == "unsafe"])
    assert set(rows["source_id"]) == unsafe and len(unsafe) == 300
    assert (rows["category"] == rows["transform"]).all()
    assert (rows["id"] == rows["source_id"] + "~" + rows["transform"]).all()
    assert set(rows["transform"]) == set(jailbreaks.load_transforms())
    assert rows.groupby("transform").size().eq(300).all()


def test_every_jailbreak_prompt_is_its_transform_applied_to_its_source(sets: dict[str, pd.DataFrame]) -> None:
    prompts = pd.concat([sets["xstest"], sets["advbench"]]).set_index("id")["prompt"]
    for row in sets["jailbreak"].itertuples():
        assert row.source_prompt == prompts[row.source_id], row.id
        assert row.prompt == jailbreaks.apply(row.transform, prompts[row.source_id]), row.id
        assert jailbreaks.recover(row.transform, row.prompt) == prompts[row.source_id], row.id


def test_utility_answers_are_letters_within_the_choices_and_the_prompt_shows_them(
    sets: dict[str, pd.DataFrame],
) -> None:
    template = mcq.load_template()
    for row in sets["utility"].itertuples():
        choices = list(row.choices)
        assert len(choices) == 4 and len({normalise(c) for c in choices}) == 4, row.id
        assert row.answer in mcq.LETTERS[: len(choices)], row.id
        assert row.prompt == template.render(row.question, choices), row.id
        assert mcq.score(row.answer, choices, row.answer) and mcq.score(
            choices[ord(row.answer) - 65], choices, row.answer
        )
    assert sets["utility"]["answer"].value_counts().to_dict() == dict.fromkeys("ABCD", 10)
