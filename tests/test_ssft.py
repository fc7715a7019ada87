"""`aidsafe train ssft` (issue 14): set exports are checked row by row, the forked text trains the trace only,
forking tokens are added once at the mean embedding, only matched pairs get gradients, and runs (a tiny
model here, the embedded SmolLM2 in the e2e test) write a checkpoint whose forks can be sampled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aidsafe.errors import ConfigError, InputError
from aidsafe.fork_losses import Encoded, loss_matrix
from aidsafe.fork_sampling import fork_diversity, sample_forks
from aidsafe.fork_tokens import IGNORE, add_fork_tokens, forked_example, forked_prompt_ids, prompt_ids
from aidsafe.ssft import SsftSettings, encode, fork_usage_after, ssft_settings, train_ssft
from aidsafe.ssft_data import load_sets
from aidsafe.ssft_loop import step

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUICK = {"device": "cpu", "threads": 1, "max_length": 96}


def trace(cot: str, response: str, configuration: str = "persona-a") -> dict[str, Any]:
    return {"cot": cot, "response": response, "configuration": configuration, "scores": {"policy": 4}}


def set_row(i: int, traces: int = 2) -> dict[str, Any]:
    made = [
        trace(f"Step {k}: think about rule {i}.", f"Rule {i} answer {k}.", f"c{k}") for k in range(traces)
    ]
    return {"id": f"p{i}", "prompt": f"What is rule {i}?", "traces": made, "traces_count": traces,
            "diversity": 0.5 if traces > 1 else None}  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_sets(directory: Path, rows: int = 3, validation: int = 1) -> Path:
    write_jsonl(directory / "train.jsonl", [set_row(i, 2 + i % 2) for i in range(rows)])
    if validation:
        write_jsonl(directory / "validation.jsonl", [set_row(100 + i) for i in range(validation)])
    (directory / "README.md").write_text("---\nconfigs:\n- config_name: sets-abc123\n---\n", encoding="utf-8")
    return directory


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (every text encodes) with ChatML specials and a chat template; no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab, [], unk_token=None))
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT
    return tokenizer


def tiny_model(vocab: int, tied: bool = False) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=tied)  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    """A tiny untrained Llama checkpoint with the byte-level tokenizer, as `--base`."""
    tokenizer = tiny_tokenizer()
    directory = tmp_path / "tiny-base"
    tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --- the set export -------------------------------------------------------------------------------------


def test_a_row_with_an_empty_trace_set_names_the_file_and_the_row(tmp_path: Path) -> None:
    rows = [set_row(0), set_row(1) | {"traces": []}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(InputError, match=r"train.jsonl row 2: traces: Tuple should have at least 1 item"):
        load_sets(tmp_path)


def test_a_trace_without_its_cot_names_the_parquet_file_and_the_row(tmp_path: Path) -> None:
    rows = [set_row(0), set_row(1), set_row(2)]
    del rows[2]["traces"][1]["cot"]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    with pytest.raises(
        InputError, match=r"train.parquet row 3: traces.1.cot: Input should be a valid string"
    ):
        load_sets(tmp_path)


def test_an_sft_export_given_to_ssft_says_it_is_not_a_set_export(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"id": "r0", "messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(InputError, match=r"no traces column: not a set export .*`aidsafe train sft`"):
        load_sets(tmp_path)


def test_a_missing_directory_or_train_split_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="set export directory not found"):
        load_sets(tmp_path / "nowhere")
    write_jsonl(tmp_path / "validation.jsonl", [set_row(0)])
    with pytest.raises(InputError, match=r"no train split \(train.parquet or train.jsonl\)"):
        load_sets(tmp_path)


def test_a_repeated_prompt_id_names_its_second_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [set_row(0), set_row(1), set_row(0)])
    with pytest.raises(InputError, match=r"row 3: id 'p0' is on an earlier row too"):
        load_sets(tmp_path)


def test_parquet_is_preferred_and_struct_scores_lose_the_nulls_parquet_adds(tmp_path: Path) -> None:
    first, second = set_row(0), set_row(1)
    second["traces"][0]["scores"] = {"faithfulness": 3}  # the struct column gets both metrics, one null
    pq.write_table(pa.Table.from_pylist([first, second]), tmp_path / "train.parquet")
    write_jsonl(tmp_path / "train.jsonl", [set_row(7)])
    make_sets(tmp_path / "unused", 1)
    (tmp_path / "README.md").write_text("- config_name: sets-0f1e\n", encoding="utf-8")
    data = load_sets(tmp_path)
    assert data.train.path.name == "train.parquet" and [r.id for r in data.train.rows] == ["p0", "p1"]
    assert data.train.rows[1].traces[0].scores == {"faithfulness": 3} and data.config == "sets-0f1e"
    assert data.validation is None and data.test is None and data.train.traces == 4


# --- the forked text and the forking tokens -------------------------------------------------------------


def test_the_forked_text_masks_the_prompt_and_forking_token_and_trains_the_trace_and_eos() -> None:
    tokenizer = tiny_tokenizer()
    add_fork_tokens(tiny_model(len(tokenizer)), tokenizer, 2)
    ids, labels = forked_example(tokenizer, "Is it safe?", "<think2>", "Check the rule.", "Yes.")
    text = tokenizer.decode(ids)
    assert text == ("<|im_start|>user\nIs it safe?<|im_end|>\n<|im_start|>assistant\n<think2>"
                    "<think>\nCheck the rule.\n</think>\n\nYes.<|im_end|>")  # fmt: skip
    head = len(prompt_ids(tokenizer, "Is it safe?")) + 1
    assert labels[:head] == [IGNORE] * head and labels[head:] == ids[head:]
    assert tokenizer.decode(labels[head:]) == "<think>\nCheck the rule.\n</think>\n\nYes.<|im_end|>"
    assert ids[:head] == forked_prompt_ids(tokenizer, "Is it safe?", "<think2>")  # what sampling starts from


def test_forking_tokens_are_added_once_and_a_different_count_is_refused() -> None:
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer))
    first = add_fork_tokens(model, tokenizer, 3)
    size, rows = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    assert add_fork_tokens(model, tokenizer, 3) == first
    assert len(tokenizer) == size == rows == model.get_input_embeddings().weight.shape[0]
    with pytest.raises(
        ConfigError, match=r"already has 3 forking tokens \(<think1> ... <think3>\), not the 4"
    ):
        add_fork_tokens(model, tokenizer, 4)


def test_new_embedding_rows_start_at_the_mean_of_the_old_rows_input_and_untied_output() -> None:
    import torch

    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), tied=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    ids = add_fork_tokens(model, tokenizer, 2)
    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    for token in ids:
        assert torch.allclose(new_in[token], old_in.mean(dim=0)) and torch.allclose(
            new_out[token], old_out.mean(0)
        )
    assert torch.equal(new_in[: old_in.shape[0]], old_in)  # the old rows are untouched


def test_a_prompt_too_long_for_max_length_names_its_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [set_row(0), set_row(1) | {"prompt": "long " * 40}])
    with pytest.raises(InputError, match=r"train.jsonl row 2: the prompt is \d+ tokens .* --max-length 64"):
        encode(tiny_tokenizer(), load_sets(tmp_path).train, 64)


# --- the matched loss -----------------------------------------------------------------------------------


def _matched_setup() -> tuple[Any, list[int], Encoded, int]:
    import torch

    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), tied=False)
    forks = add_fork_tokens(model, tokenizer, 3)
    with torch.no_grad():  # forks that differ already (they start alike: the matching then has only ties)
        model.get_input_embeddings().weight[forks] += torch.randn(3, 16)
    row = Encoded("p0", prompt_ids(tokenizer, "Q?"), [tokenizer("<think>a</think>b")["input_ids"] + [257],
                  tokenizer("<think>long way round</think>c")["input_ids"] + [257]], ["a", "b"])  # fmt: skip
    return model, forks, row, int(tokenizer.pad_token_id)


def test_no_gradient_reaches_the_forking_token_that_no_trace_matched() -> None:
    model, forks, row, pad = _matched_setup()  # K = 3 tokens, M = 2 traces: one token is unmatched
    _, chosen = step(model, [row], forks, "match", pad)
    assignment = chosen[0][0]
    unmatched = ({0, 1, 2} - set(assignment.tokens)).pop()
    grad = model.get_input_embeddings().weight.grad
    assert len(assignment.pairs) == 2 and float(grad[forks[unmatched]].abs().sum()) == 0.0
    assert all(float(grad[forks[i]].abs().sum()) > 0.0 for i in assignment.tokens)


def test_the_step_loss_is_the_mean_of_the_matched_entries_of_the_matrix_only() -> None:
    model, forks, row, pad = _matched_setup()
    model.eval()
    matrix = loss_matrix(model, row, forks, pad)
    loss, chosen = step(model, [row], forks, "match", pad)
    assignment, logged = chosen[0]
    matched = [matrix[i, j] for i, j in assignment.pairs]
    assert loss == pytest.approx(sum(matched) / len(matched), rel=1e-5)
    assert loss < matrix.mean() - 1e-3 and (logged == matrix).all()  # not every entry
    assert assignment.total == pytest.approx(min(
        matrix[a, 0] + matrix[b, 1] for a in range(3) for b in range(3) if a != b
    ))  # fmt: skip


def test_the_fixed_baseline_trains_trace_j_after_token_j_without_a_matrix() -> None:
    model, forks, row, pad = _matched_setup()
    _, chosen = step(model, [row], forks, "fixed", pad)
    assert chosen[0][0].pairs == ((0, 0), (1, 1)) and chosen[0][1] is None
    assert model.get_input_embeddings().weight.grad[forks[2]].abs().sum() == 0.0


# --- settings, sampling and diversity -------------------------------------------------------------------


@pytest.mark.parametrize(("values", "option"), [({"forks": 0}, "--forks"), ({"forks": 65}, "--forks"),
                                                ({"assignment": "greedy"}, "--assignment"),
                                                ({"batch_size": 0}, "--batch-size")])  # fmt: skip
def test_an_out_of_range_setting_names_its_option(values: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        ssft_settings(values)
    assert ssft_settings({"forks": None}).forks == 4 and SsftSettings().assignment == "match"


def test_sampling_a_checkpoint_without_forks_json_says_it_is_not_an_ssft_checkpoint(tiny_base: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"not an SSFT checkpoint \(no forks.json\): .*`aidsafe train ssft`"
    ):
        sample_forks(tiny_base, "hi")


def test_fork_diversity_is_the_mean_pairwise_distance_of_the_answers() -> None:
    assert fork_diversity(["a b c d", "a b c d"]) == 0.0
    assert fork_diversity(["one two three", "four five six", "one two three"]) == pytest.approx(2 / 3)
    assert fork_diversity(["alone"]) is None


# --- whole runs -----------------------------------------------------------------------------------------


def test_a_run_on_a_tiny_base_writes_a_checkpoint_with_its_forks_log_and_card(
    tmp_path: Path, tiny_base: Path
) -> None:
    data, output = make_sets(tmp_path / "sets"), tmp_path / "model"
    settings = SsftSettings(forks=3, max_steps=3, **QUICK)
    result = train_ssft(data, output, base=tiny_base, settings=settings, report=lambda _: None)
    assert result.kind == "ssft" and result.steps == 3 and result.validation_loss is not None
    forks = json.loads((output / "forks.json").read_text())
    assert forks == {"tokens": ["<think1>", "<think2>", "<think3>"], "assignment": "match"}
    record, log = (
        json.loads((output / "training.json").read_text()),
        json.loads((output / "training_log.json").read_text()),
    )
    assert (
        record["kind"] == "ssft"
        and record["export_config"] == "sets-abc123"
        and record["splits"]["train"]["sha256"]
    )
    assert [len(e["assignments"]) for e in log] == [2, 1, 2]  # 3 prompts, 2 a step
    assert sum(log[-1]["fork_usage"]) == sum(len(a["pairs"]) for e in log for a in e["assignments"])
    assert {"loss.png", "README.md", "model.safetensors", "config.json"} <= {p.name for p in output.iterdir()}
    assert "Fork usage" in result.card and "sets-abc123" in result.card
    answers = sample_forks(output, "What is rule 1?", max_new_tokens=3)
    assert [a.token for a in answers] == forks["tokens"] and all(a.seconds > 0 for a in answers)
    usage = fork_usage_after(output, data, max_length=96)
    assert sum(usage.usage) == 2 + 3 + 2 and len(usage.matches) == 3  # every trace matched (M <= K)
    with pytest.raises(ConfigError, match=r"--forks 4: .* has 3 forking tokens"):
        sample_forks(output, "hi", forks=4)


def test_an_ssft_checkpoint_as_base_keeps_its_tokens_and_a_different_k_is_refused(
    tmp_path: Path, tiny_base: Path
) -> None:
    data, first, second = make_sets(tmp_path / "sets", 2, 0), tmp_path / "m1", tmp_path / "m2"
    settings = SsftSettings(forks=2, max_steps=1, **QUICK)
    train_ssft(data, first, base=tiny_base, settings=settings, report=lambda _: None)
    train_ssft(data, second, base=first, settings=settings, report=lambda _: None)
    sizes = [json.loads((d / "config.json").read_text())["vocab_size"] for d in (tiny_base, first, second)]
    assert sizes[1] == sizes[2] == sizes[0] + 2
    with pytest.raises(ConfigError, match="already has 2 forking tokens"):
        train_ssft(data, tmp_path / "m3", base=first, settings=SsftSettings(forks=3, max_steps=1, **QUICK))


@pytest.mark.e2e
def test_a_short_cpu_run_on_the_embedded_model_learns_logs_assignments_and_samples_each_fork(
    cache: Path, tmp_path: Path
) -> None:
    from aidsafe.train_run import cpu_threads

    data, output = make_sets(tmp_path / "sets", rows=4, validation=1), tmp_path / "model"
    settings = SsftSettings(forks=2, max_steps=4, batch_size=2, device="cpu", threads=1, max_length=64)
    result = train_ssft(data, output, settings=settings, cache_dir=cache, report=lambda _: None)
    log = json.loads((output / "training_log.json").read_text())
    losses = [e["loss"] for e in log]
    assert len(log) == 4 and all(len(e["assignments"]) == 2 for e in log)
    assert all(len(a["pairs"]) == 2 and len(a["losses"]) == 2 for e in log for a in e["assignments"])
    assert {p[0] for e in log for a in e["assignments"] for p in a["pairs"]} == {"<think1>", "<think2>"}
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    assert result.validation_loss and result.validation_loss[1] < result.validation_loss[0]
    with cpu_threads(1):  # a shared 2-core machine: one thread is far faster when anything else runs
        answers = sample_forks(output, "What is rule 2?", max_new_tokens=8)
    assert [a.token for a in answers] == ["<think1>", "<think2>"] and all(a.text for a in answers)


# --- the command line, and the eval target's forks ------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_train_ssft_and_sample_from_the_command_line_and_eval_s_fork_answers_match_sample(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aidsafe.cli import main
    from aidsafe.local_model import generate

    data, output = make_sets(tmp_path / "sets"), tmp_path / "model"
    quick = ["--device", "cpu", "--threads", "1", "--max-length", "96", "--max-steps", "2"]
    command = ["train", "ssft", "--data", str(data), "--output", str(output), "--base", str(tiny_base)]
    assert main([*command, "--forks", "2", "--assignment", "fixed", *quick]) == 0
    assert "ssft, full, 2 steps" in capsys.readouterr().out
    assert json.loads((output / "forks.json").read_text())["assignment"] == "fixed"
    assert (
        main(["sample", "--checkpoint", str(output), "--prompt", "What is rule 1?", "--max-new-tokens", "3"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "<think1> (" in printed and "<think2> (" in printed and "diversity: " in printed
    first = sample_forks(output, "What is rule 1?", forks=1, max_new_tokens=3)[0].text
    assert generate(output, [("human", "What is rule 1?")], 3, 0.0, fork="<think1>")[0] == first.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "ssft", "--lora-rank", "8"], "--lora-rank: Extra inputs are not permitted"),
        (
            ["train", "sft", "--forks", "2"],
            "--forks and --assignment are options of `aidsafe train ssft` only",
        ),
    ],
)
def test_an_option_of_the_other_trainer_is_one_error_line(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aidsafe.cli import main

    data = make_sets(tmp_path / "sets")
    code = main([*argv, "--data", str(data), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
