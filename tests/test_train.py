"""`aidsafe train sft|dpo`: bad exports are clear errors; short CPU runs on the embedded model learn, write a
checkpoint that loads and answers, and a card with the data hash, the settings and the results."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aidsafe.cli import main
from aidsafe.errors import ConfigError, InputError
from aidsafe.partitions import fingerprint_file
from aidsafe.train import check_output, publish, train
from aidsafe.train_card import TrainRecord, render_card, summary
from aidsafe.train_config import BaseModelInfo, TrainSettings, train_settings
from aidsafe.train_data import load_export
from aidsafe.train_run import Run, check_template
from tests.conftest import write_partition

# A shared 2-core machine: one torch thread is far faster than two when anything else is running.
QUICK = {"batch_size": 2, "max_length": 128, "device": "cpu", "threads": 1}


def sft_row(i: int) -> dict[str, Any]:
    return {"id": f"r{i}", "messages": [
        {"role": "user", "content": f"What is safety rule number {i}?"},
        {"role": "assistant", "content": f"<think>\nRule {i} is harmless to state.\n</think>\n\n"
                                         f"Rule {i}: keep the blue door closed and tell a friend."},
    ]}  # fmt: skip


def dpo_row(i: int) -> dict[str, Any]:
    def answer(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    return {"id": f"r{i}", "prompt": [{"role": "user", "content": f"How do I open lock {i}?"}],
            "chosen": answer(f"If lock {i} is yours, call a locksmith."),
            "rejected": answer(f"Rake the pins of lock {i} with a wrench.")}  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_export(directory: Path, kind: str, train_rows: int, validation_rows: int = 2) -> Path:
    """An export directory as `aidsafe export` writes it: train and validation splits (JSONL)."""
    row = sft_row if kind == "sft" else dpo_row
    write_jsonl(directory / "train.jsonl", [row(i) for i in range(train_rows)])
    write_jsonl(directory / "validation.jsonl", [row(100 + i) for i in range(validation_rows)])
    return directory


def test_a_missing_export_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputError, match="export directory not found"):
        load_export(tmp_path / "nowhere", "sft")
    assert main(["train", "sft", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "m")]) == 2
    assert "aidsafe: error:" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_an_export_without_a_train_split_is_a_clear_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "validation.jsonl", [sft_row(0)])
    with pytest.raises(InputError, match=r"no train split \(train.parquet or train.jsonl\)"):
        load_export(tmp_path, "sft")


def test_a_dpo_export_given_to_train_sft_names_the_file_and_the_other_command(tmp_path: Path) -> None:
    export = make_export(tmp_path / "dpo", "dpo", 2)
    expected = (
        "train.jsonl: no messages column: not an SFT export; it looks like a DPO export: `aidsafe train dpo`"
    )
    with pytest.raises(InputError, match=re.escape(expected)):
        load_export(export, "sft")
    with pytest.raises(InputError, match="no prompt, chosen, rejected column: not a DPO export"):
        load_export(make_export(tmp_path / "sft", "sft", 2), "dpo")


def test_a_row_without_messages_names_the_file_and_the_row(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [sft_row(0), sft_row(1), {"id": "r2", "messages": None}]
    write_partition(tmp_path / "train.parquet", rows)
    with pytest.raises(InputError, match=r"train.parquet row 3: messages: Input should be a valid list"):
        load_export(tmp_path, "sft")


def test_a_conversation_that_does_not_end_with_the_answer_names_the_row(tmp_path: Path) -> None:
    row = sft_row(1)
    row["messages"].reverse()
    write_jsonl(tmp_path / "train.jsonl", [sft_row(0), row])
    with pytest.raises(InputError, match=r"train\.jsonl row 2: messages must have a user turn and end with"):
        load_export(tmp_path, "sft")


def test_an_sft_row_becomes_a_prompt_completion_pair_so_only_the_answer_is_trained(tmp_path: Path) -> None:
    data = load_export(make_export(tmp_path, "sft", 3), "sft")
    first = data.train.rows[0]
    assert first["prompt"] == [sft_row(0)["messages"][0]] and first["completion"] == [
        sft_row(0)["messages"][1]
    ]
    assert data.train.sha256 == fingerprint_file(tmp_path / "train.jsonl") and data.validation is not None


def test_a_cot_in_reasoning_content_that_the_chat_template_would_drop_is_refused(tmp_path: Path) -> None:
    row = sft_row(0)
    row["messages"][1] |= {"content": "Rule 0.", "reasoning_content": "Rule 0 is harmless."}  # --cot field
    write_jsonl(tmp_path / "train.jsonl", [row])
    data = load_export(tmp_path, "sft")
    assert data.train.has_reasoning_field
    with pytest.raises(InputError, match=r"train\.jsonl: the CoT is in reasoning_content, which this model"):
        check_template(SimpleNamespace(chat_template="{{ message['content'] }}"), data)
    check_template(SimpleNamespace(chat_template="{{ message['reasoning_content'] }}"), data)
    with pytest.raises(ConfigError, match="has no chat template"):
        check_template(SimpleNamespace(chat_template=None), data)


def test_bad_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--learning-rate: Input should be greater than 0"):
        train_settings({"learning_rate": -1.0, "epochs": None})
    assert train_settings({"lora": False}).learning_rate_for("sft") == 2e-5
    assert TrainSettings().learning_rate_for("dpo") == 5e-5


def test_an_output_directory_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError, match="holds other files \\(kept\\); train into a new directory"):
        check_output(tmp_path)
    check_output(tmp_path / "new")
    (tmp_path / "kept").rmdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / ".aidsafe.lock").touch()
    check_output(tmp_path)  # the CLI's lock and Prefect log are no reason to refuse


def checkpoint_files(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True)
    for name in ("model.safetensors", "training.json", "config.json"):
        (directory / name).write_text(marker)
    return directory


def test_a_run_killed_while_publishing_leaves_no_directory_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = checkpoint_files(tmp_path / "out", "old")
    (output / "adapter").mkdir()
    real, moved = os.replace, list[Any]()

    def dying(source: Any, target: Any) -> None:
        if len(moved) == 1:
            raise KeyboardInterrupt
        moved.append(target)
        real(source, target)

    monkeypatch.setattr(os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        publish(checkpoint_files(tmp_path / "staging", "new"), output)
    assert not (output / "config.json").exists()  # the old checkpoint's marker went first, the new comes last
    monkeypatch.setattr(os, "replace", real)
    publish(checkpoint_files(tmp_path / "staging2", "new"), output)
    assert (output / "config.json").read_text() == "new" and not (output / "adapter").exists()


def fake_record(tmp_path: Path) -> TrainRecord:
    data = load_export(make_export(tmp_path / "export", "dpo", 3), "dpo")
    rewards = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    last = dict(zip(rewards, (0.2, -0.3, 0.5, 1.0), strict=True))
    history = [{"step": 1, "loss": 0.69, **dict.fromkeys(rewards, 0.0)}, {"step": 2, "loss": 0.5, **last}]
    now = datetime.now(UTC)
    run = Run(history, {"eval_loss": 0.69}, {"eval_loss": 0.55}, now, now, 1.5, 2, 0.7, 2**30, None)
    base = BaseModelInfo(tmp_path / "base", "a test base", "ab" * 32)
    settings = TrainSettings(max_steps=2, seed=7)
    return TrainRecord("dpo", data, base, settings, "cpu", "fp32", run, 3.0, (10, 100))


def test_the_card_lists_the_data_hash_the_settings_and_the_results(tmp_path: Path) -> None:
    record = fake_record(tmp_path)
    card = render_card(summary(record), tmp_path / "model")
    assert f"sha256 `{fingerprint_file(tmp_path / 'export' / 'train.jsonl')}`" in card
    assert "3 rows" in card and "`" + str(tmp_path / "export") + "`" in card and "ab" * 32 in card
    for setting in ("| max_steps | 2 |", "| seed | 7 |", "| learning_rate | 5e-05 |", "| beta | 0.1 |",
                    "| method | LoRA |", "| lora_rank | 16 |", "| device | cpu (asked: auto) |"):  # fmt: skip
        assert setting in card
    assert "training loss: 0.69 at the first step, 0.5 at the last" in card
    assert "validation loss: 0.6900 before, 0.5500 after" in card
    assert "rewards at the last step: chosen 0.2000, rejected -0.3000, margins 0.5000" in card
    assert "peak memory: RSS 1024 MiB" in card and f"hf:{tmp_path / 'model'}" in card


def losses(output: Path) -> list[float]:
    return [e["loss"] for e in json.loads((output / "training_log.json").read_text()) if "loss" in e]


@pytest.mark.e2e
def test_sft_on_the_embedded_model_lowers_the_loss_and_the_checkpoint_answers(
    cache: Path, tmp_path: Path
) -> None:
    from aidsafe.hf import load_causal_lm

    export, output = make_export(tmp_path / "export", "sft", 8), tmp_path / "model"
    result = train("sft", export, output, settings=TrainSettings(max_steps=20, **QUICK), cache_dir=cache)
    curve = losses(output)
    assert len(curve) == 20 and curve[-1] < 0.6 * curve[0], curve  # it learns the 8 rows
    assert result.validation_loss and result.validation_loss[1] < result.validation_loss[0]
    model, tokenizer = load_causal_lm(output)
    chat = [{"role": "user", "content": "What is safety rule number 3?"}]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    record = json.loads((output / "training.json").read_text())
    assert record["data"] == str(export.resolve())  # what `aidsafe eval` checks its prompts against
    assert record["splits"]["train"]["sha256"] == fingerprint_file(export / "train.jsonl")
    assert (output / "loss.png").stat().st_size > 1000 and (
        output / "adapter" / "adapter_config.json"
    ).is_file()
    assert not [p for p in output.iterdir() if p.name.startswith(".staging")]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_api")
def test_dpo_flow_runs_and_publishes_a_card_with_the_reward_metrics(cache: Path, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train as train_flow

    export, output = make_export(tmp_path / "export", "dpo", 4), tmp_path / "model"
    result = train_flow(
        "dpo", str(export), str(output), None, TrainSettings(max_steps=3, **QUICK), str(cache)
    )
    assert (
        result.steps == 3 and result.rewards and set(result.rewards) >= {"rewards/chosen", "rewards/rejected"}
    )
    card = (output / "README.md").read_text()
    assert "rewards at the last step: chosen" in card and "validation reward accuracy after" in card
    assert (output / "config.json").is_file()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["aidsafe-train-dpo"]))
        )
    assert found and "rewards at the last step" in str(found[0].data)
