"""Multiple-choice items (aidsafe/mcq.py): the loader on Parquet and JSONL with the answer as a letter, an
index or a choice's text; bad rows named by file and row; the prompt template; and the scorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aidsafe.errors import InputError, PolicyError
from aidsafe.mcq import DEFAULT_TEMPLATE, chosen_letter, load_mcq, load_template, score
from tests.conftest import write_partition

CHOICES = ["Paris", "Berlin", "Rome", "Madrid"]
QUESTIONS = [f"What is the capital of {c}?" for c in ("Germany", "Italy", "Spain", "France")]
ANSWERS: dict[str, list[Any]] = {
    "letter": ["B", "C", "d", "A"],  # any case
    "index": [1, 2, 3, 0],  # 0-based
    "text": ["Berlin", "Rome", "Madrid", "Paris"],
}
ITEMS: list[dict[str, Any]] = [
    {"question": q, "choices": CHOICES, "answer": a}
    for q, a in zip(QUESTIONS, ANSWERS["letter"], strict=True)
]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("given", sorted(ANSWERS))
@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_the_loader_reads_letter_index_and_text_answers_as_letters(
    tmp_path: Path, suffix: str, given: str
) -> None:
    items = [
        {"question": q, "choices": CHOICES, "answer": a}
        for q, a in zip(QUESTIONS, ANSWERS[given], strict=True)
    ]
    path = tmp_path / f"capitals.{suffix}"
    write_partition(path, items) if suffix == "parquet" else jsonl(path, items)
    rows = load_mcq(path)
    assert [r["answer"] for r in rows] == ["B", "C", "D", "A"]
    assert [r["id"] for r in rows] == ["capitals-1", "capitals-2", "capitals-3", "capitals-4"]
    assert {(r["label"], r["set"], r["category"]) for r in rows} == {("safe", "capitals", "capitals")}
    assert rows[0]["question"] == QUESTIONS[0] and list(rows[0]["choices"]) == CHOICES


@pytest.fixture(params=["parquet", "jsonl"])
def items_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "parquet":
        return write_partition(tmp_path / "capitals.parquet", ITEMS)
    return jsonl(tmp_path / "capitals.jsonl", ITEMS)


def test_the_prompt_lists_the_lettered_choices_and_asks_for_the_letter(items_file: Path) -> None:
    prompt = load_mcq(items_file, set_name="geo")[0]["prompt"]
    assert "What is the capital of Germany?" in prompt
    assert "A. Paris\nB. Berlin\nC. Rome\nD. Madrid" in prompt
    assert "(A, B, C or D) only" in prompt and "letter" in prompt


def test_the_loader_keeps_ids_categories_and_other_columns_of_the_file(tmp_path: Path) -> None:
    rows = load_mcq(jsonl(tmp_path / "x.jsonl", [{**ITEMS[0], "id": "q7", "category": "geo", "extra": 1}]))
    assert (rows[0]["id"], rows[0]["category"], rows[0]["extra"]) == ("q7", "geo", 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"answer": "E"}, r"`answer` 'E' is neither a choice's letter nor the text of a choice"),
        ({"answer": 4}, r"`answer` index 4 is not within the 4 choices"),
        ({"answer": True}, r"`answer` must be a letter"),
        ({"answer": None}, r"`answer` must be a letter"),
        ({"choices": ["Only one"]}, r"`choices` must have 2 to 26 entries"),
        ({"choices": ["Paris", "paris "]}, r"`choices` has the same text twice"),
        ({"choices": "Paris, Berlin"}, r"`choices` must be a list of non-empty texts"),
        ({"question": ""}, r"`question` must be a non-empty text"),
        ({"choices": ["B", "A"], "answer": "A"}, r"both letter A and the text of choice B"),
    ],
)
def test_a_bad_row_is_an_error_naming_the_file_and_the_row(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    path = jsonl(tmp_path / "items.jsonl", [ITEMS[0], ITEMS[1] | bad])
    with pytest.raises(InputError, match=message) as info:
        load_mcq(path)
    assert str(info.value).startswith(f"{path} row 2: ") and info.value.row == 2


def test_a_bad_parquet_row_is_named_by_its_row(tmp_path: Path) -> None:
    path = write_partition(tmp_path / "items.parquet", [ITEMS[0], ITEMS[1], ITEMS[2] | {"answer": "Lisbon"}])
    with pytest.raises(InputError, match="row 3: `answer` 'Lisbon'"):
        load_mcq(path)


def test_a_file_that_is_no_item_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (broken := tmp_path / "broken.jsonl").write_text('{"question": "Q?"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.jsonl row 2: not valid JSON"):
        load_mcq(broken)
    no_answer = jsonl(tmp_path / "no_answer.jsonl", [{"question": "Q?", "choices": CHOICES}])
    with pytest.raises(InputError, match=r"no_answer.jsonl: no `answer` column"):
        load_mcq(no_answer)
    with pytest.raises(InputError, match=r"items.csv: not a multiple-choice file"):
        load_mcq(tmp_path / "items.csv")
    repeated = jsonl(tmp_path / "repeated.jsonl", [ITEMS[0] | {"id": "q"}, ITEMS[1] | {"id": "q"}])
    with pytest.raises(InputError, match=r"repeated.jsonl row 2: id 'q' repeated"):
        load_mcq(repeated)


def test_a_malformed_template_file_is_an_error_naming_it(tmp_path: Path) -> None:
    text = DEFAULT_TEMPLATE.read_text(encoding="utf-8")
    (path := tmp_path / "mcq.toml").write_text(text.replace("${choices}", "(the choices)"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"template: must use \$\{choices\}, \$\{question\}") as info:
        load_template(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "reply",
    ["B", "b", "B.", "B)", "(B)", "**B**", "Answer: B", "answer: (B)", "The answer is B.",
     "I think the answer is B", "The correct answer is (B) Berlin.", "B) Berlin", "B. Berlin", "Berlin",
     "berlin.", "Option B", "The answer is B, not A."],
)  # fmt: skip
def test_a_reply_giving_the_right_letter_or_choice_text_scores(reply: str) -> None:
    assert score(reply, CHOICES, "B"), reply


@pytest.mark.parametrize(
    "reply",
    ["A", "", "I think so", "A or B", "A, B", "Answer: A or B", "Answer: B\nAnswer: C", "B) Paris",
     "A. The answer is B", "The answer is Berlin", "The answer is a city", "Bonn", "E"],
)  # fmt: skip
def test_a_reply_giving_a_wrong_letter_none_or_several_does_not_score(reply: str) -> None:
    assert not score(reply, CHOICES, "B"), reply


def test_chosen_letter_reports_what_the_reply_gave() -> None:
    assert chosen_letter("The answer is C.", CHOICES) == "C"
    assert chosen_letter("Madrid", CHOICES) == "D"
    assert chosen_letter("A or B", CHOICES) is None
