"""SFT and DPO exports: loaded back with Hugging Face `datasets`, checked with TRL's own format helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_dataset
from trl.data_utils import is_conversational

from aidsafe.config import DEFAULT_POLICIES, load_settings
from aidsafe.errors import AidsafeError
from aidsafe.export import assign_splits, export, parse_ratios
from aidsafe.policies import load_policies
from aidsafe.summary import summarize
from tests.conftest import write_partition

POLICY_SET = load_policies(DEFAULT_POLICIES)


SCORES = {"relevance": 5, "coherence": 4, "completeness": 4, "faithfulness_policy_cot": 4,
          "faithfulness_policy_response": 5, "faithfulness_cot_response": 3}  # fmt: skip


def kept_row(i: int, prompt: str) -> dict[str, object]:
    return {
        "id": f"xstest-{i}", "prompt": prompt, "label": "safe", "policy_set": POLICY_SET.hash,
        "refined_cot": [f"Thought {i}a.", f"Thought {i}b."], "refined_response": f"Answer {i}.",
        "model_refiner": "big-model", **{f"score_{m}": s for m, s in SCORES.items()},
    }  # fmt: skip


def make_run(root: Path, n: int = 40, repeats: int = 2) -> Path:
    """An output directory as `aidsafe run` leaves it: graded, kept (prompts repeated), dpo, summaries."""
    rows = [kept_row(i, f"Prompt number {i // repeats}?") for i in range(n)]
    write_partition(root / "kept" / "p.parquet", rows)
    write_partition(root / "graded" / "p.parquet", [*rows, kept_row(999, "Below the threshold?")])
    dpo = [r | {"dpo_pair": i % 4 != 0, "rejected_cot": ["Bad thought."], "rejected_response": "Bad answer."}
           for i, r in enumerate(rows)]  # fmt: skip
    write_partition(root / "dpo" / "p.parquet", dpo)
    summarize("generate", "in", root, [], load_settings(env={}), POLICY_SET)
    return root


def splits(directory: Path, ext: str = "parquet") -> dict[str, str]:
    return {name: str(directory / f"{name}.{ext}") for name in ("train", "validation", "test")}


def test_sft_export_loads_with_datasets_and_is_conversational(tmp_path: Path) -> None:
    target, counts = export("sft", make_run(tmp_path / "out"))
    assert counts == {"train": 36, "validation": 2, "test": 2}
    for ext, builder in (("parquet", "parquet"), ("jsonl", "json")):
        ds = load_dataset(builder, data_files=splits(target, ext))
        assert {name: len(ds[name]) for name in ds} == counts
        example = ds["train"][0]
        assert is_conversational(example)
        user, assistant = example["messages"]
        assert user["role"] == "user" and user["content"].startswith("Prompt number")
        assert (
            assistant["content"].startswith("<think>\nThought")
            and "</think>\n\nAnswer" in assistant["content"]
        )


def test_sft_export_with_the_cot_as_a_reasoning_field(tmp_path: Path) -> None:
    target, _ = export("sft", make_run(tmp_path / "out"), cot="field", formats=("jsonl",))
    record = json.loads((target / "train.jsonl").read_text().splitlines()[0])
    assistant = record["messages"][1]
    assert "<think>" not in assistant["content"] and assistant["reasoning_content"].startswith("Thought")
    assert not (target / "train.parquet").exists()


def test_no_prompt_is_in_two_splits(tmp_path: Path) -> None:
    target, counts = export("sft", make_run(tmp_path / "out", n=60, repeats=3), split=((0.6, 0.2, 0.2), 7))
    ds = load_dataset("parquet", data_files=splits(target))
    prompts = {name: {m[0]["content"] for m in ds[name]["messages"]} for name in ds}
    assert not (prompts["train"] & prompts["validation"] or prompts["train"] & prompts["test"]
                or prompts["validation"] & prompts["test"])  # fmt: skip
    assert sum(counts.values()) == 60 and min(counts.values()) > 0


def test_splits_are_seeded() -> None:
    prompts = [f"p{i}" for i in range(100)]
    assert assign_splits(prompts, (0.8, 0.1, 0.1), 1) == assign_splits(prompts, (0.8, 0.1, 0.1), 1)
    assert assign_splits(prompts, (0.8, 0.1, 0.1), 1) != assign_splits(prompts, (0.8, 0.1, 0.1), 2)
    assert assign_splits(["Same  prompt", "same prompt"], (1, 0, 0), 0) == assign_splits(
        ["same prompt"], (1, 0, 0), 0
    )
    with pytest.raises(AidsafeError, match="adding up to 1"):
        parse_ratios("0.5,0.5,0.5")


def test_dpo_export_leaves_out_rows_without_a_pair(tmp_path: Path) -> None:
    target, counts = export("dpo", make_run(tmp_path / "out"))
    assert sum(counts.values()) == 30  # every 4th of 40 rows has no clearly worse answer
    ds = load_dataset("json", data_files=splits(target, "jsonl"))
    example = ds["train"][0]
    assert is_conversational(example)
    assert example["prompt"][0]["role"] == "user"
    assert example["chosen"][0]["content"].endswith("Answer " + example["id"].split("-")[1] + ".")
    assert example["rejected"][0]["content"] == "<think>\nBad thought.\n</think>\n\nBad answer."
    card = (target / "README.md").read_text()
    assert "rows where no belief produced a clearly worse answer: 10" in card


def test_dataset_card(tmp_path: Path) -> None:
    target, _ = export("sft", make_run(tmp_path / "out"))
    card = (target / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "| train | 36 |" in card and "made by aidsafe 0.1.0" in card
    assert "CC BY 4.0" in card and "XSTest" in card  # licence of the inputs
    assert POLICY_SET.hash in card and "### Physical harm" in card  # policy set and texts
    assert "graded rows below the score thresholds: 1" in card and "big-model" in card
    assert "| faithfulness_cot_response | 3.00 |" in card
    assert "2 deliberation agents, a budget of 4 turns" in card


def test_nothing_to_export_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AidsafeError, match="kept: nothing to export; run `aidsafe report`"):
        export("sft", tmp_path)


def card_snippet(target: Path) -> str:
    """The loading code the dataset card tells a user to run."""
    card = (target / "README.md").read_text()
    return card.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.parametrize("prompts", [1, 2, 3, 6, 20])
@pytest.mark.parametrize("formats", [("parquet", "jsonl"), ("jsonl",)], ids=["parquet", "jsonl-only"])
def test_every_export_loads_as_the_card_says(
    tmp_path: Path, prompts: int, formats: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, counts = export("sft", make_run(tmp_path / "out", n=prompts, repeats=1), formats=formats)
    written = {name: n for name, n in counts.items() if n}
    assert sum(counts.values()) == prompts and written
    scope: dict[str, object] = {}
    monkeypatch.chdir(target)  # the card's snippet names the files of its own directory
    exec(card_snippet(target), scope)
    ds: object = scope["ds"]
    assert {name: len(ds[name]) for name in ds} == written  # type: ignore[attr-defined,index]
    whole = load_dataset(str(target))  # the card's front matter: the directory loads as it is
    assert {name: len(whole[name]) for name in whole} == written
    leftovers = {p.stem for p in target.glob("*.*") if p.suffix in (".parquet", ".jsonl")} - set(written)
    assert not leftovers  # no empty (unloadable) split file


def test_a_smaller_export_removes_the_split_files_it_no_longer_has(tmp_path: Path) -> None:
    export("sft", make_run(tmp_path / "big", n=40, repeats=1), dest=tmp_path / "export")
    target, counts = export("sft", make_run(tmp_path / "small", n=1, repeats=1), dest=tmp_path / "export")
    assert counts["validation"] == 0 and not (target / "validation.parquet").exists()
    assert len(load_dataset(str(target))["train"]) == 1
