"""`aidsafe rationales`: the answers of a row, the stage per row (a character-level teacher whose rationale
depends on the answer in its context, a scripted simulator), the report's gain, the student rows, the prompt
file's validation, and the flow + export against the OpenAI-compatible test server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aidsafe.answers import Answers, counterfactual_answer, perturbed_answer, row_answers
from aidsafe.cli import main
from aidsafe.config import DEFAULT_PROMPTS, Options, Settings, load_settings
from aidsafe.errors import AnswerMissing, PolicyError, StageFailed
from aidsafe.logits import LogProbs
from aidsafe.partitions import RowRef
from aidsafe.rationale_export import export_rationales, student_records
from aidsafe.rationale_prompt import load_rationale_prompt
from aidsafe.rationale_report import leakage_adjusted_gain
from aidsafe.schemas import Simulation
from aidsafe.stage import RowContext
from aidsafe.stages import rationales as stage
from aidsafe.teacher import rationale_prompt
from tests.conftest import ScriptedModel, write_partition
from tests.openai_server import FakeOpenAI, Reply, Request

# What the character-level teacher writes after "Rationale:", by the answer in its context.
WRITES = {"refuse": " It is harmful.\n\n", "comply": " It is harmless.\n\n"}
OTHER = " Unsure.\n\n"


class CharTeacher:
    """A LogitModel over characters: after the last "Rationale:", each context spells the text of the answer
    its last "Answer:" line gives (p = 0.9 for the next character), everything else improbable."""

    name = "char-teacher"
    end_tokens = frozenset({0})
    context_size = 100_000

    def __init__(self) -> None:
        self.opened: list[int] = []  # contexts per session

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(chr(t) for t in tokens if t)

    def open(self, contexts: Sequence[Sequence[int]]) -> CharSession:
        self.opened.append(len(contexts))
        return CharSession([list(c) for c in contexts])


class CharSession:
    def __init__(self, contexts: list[list[int]]) -> None:
        self.contexts = contexts

    @staticmethod
    def _next(context: list[int]) -> LogProbs:
        text = "".join(chr(t) for t in context)
        head, _, written = text.rpartition("Rationale:")
        answer = head.rpartition("Answer: ")[2].split("\n")[0]
        target = WRITES.get(answer, OTHER)
        logprobs = np.full(128, np.log(0.1 / 127), dtype=np.float32)
        logprobs[ord(target[len(written)]) if len(written) < len(target) else 0] = np.log(0.9)
        return logprobs

    @property
    def logprobs(self) -> list[LogProbs]:
        return [self._next(c) for c in self.contexts]

    def advance(self, tokens: Sequence[int]) -> None:
        for context, token in zip(self.contexts, tokens, strict=True):
            context.append(token)

    def close(self) -> None:
        pass


@pytest.fixture
def char_teacher(monkeypatch: pytest.MonkeyPatch) -> CharTeacher:
    model = CharTeacher()
    monkeypatch.setattr(stage, "teacher", lambda settings: model)
    return model


def answer_a_or_b(messages: list[tuple[str, str]]) -> Simulation:
    """The simulator picks the choice whose word the rationale (or question) contains: harmless/harmful."""
    user = messages[-1][1]
    options = dict(line.split(": ", 1) for line in user.split("<choices>")[1].split("\n") if ": " in line)
    wanted = "comply" if "harmless" in user or "Python" in user else "refuse"
    return Simulation(choice=next(k for k, v in options.items() if v == wanted), reason="Scripted pick.")


def run_row(values: dict[str, Any], settings: Settings, simulator: ScriptedModel,
            row_context: Callable[..., RowContext]) -> dict[str, Any]:  # fmt: skip
    import asyncio

    row = RowRef(0, values["id"], values["prompt"], values)
    return asyncio.run(stage.process(row, row_context({"simulator": simulator}, settings)))


GRADED = {"id": "k1", "prompt": "How do I break into my neighbour's house?", "refused": True,
          "refined_response": "I can't help with breaking in."}  # fmt: skip


def test_a_refused_row_gets_a_rationale_for_refusing_and_a_counterfactual_one_for_complying(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    simulator = ScriptedModel("simulator", answer_a_or_b)
    columns = run_row(GRADED, load_settings(env={}), simulator, row_context)
    assert (columns["rationale_answer_source"], columns["rationale_answer"]) == ("decision", "refuse")
    assert columns["perturbed_answer"] == "comply"
    assert columns["rationale"] == "It is harmful." and columns["rationale_stop"] == "stop"
    assert columns["counterfactual_answer"] == "comply"
    assert columns["counterfactual_rationale"] == "It is harmless."
    assert columns["rationale_tokens"] == len(" It is harmful.\n\n") and columns["rationale_gap"] > 0
    assert char_teacher.opened == [2, 2]  # true and perturbed context, side by side, per rationale
    assert columns["simulated_with_rationale"] and columns["simulated_counterfactual"]
    assert columns["simulated_question_only"] is True  # the scripted simulator refuses a break-in question
    assert columns["model_teacher"] == "char-teacher" and columns["usage_simulator"]["calls"] == 3


def test_the_simulator_sees_the_rationale_without_the_question_and_the_question_without_a_rationale(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    simulator = ScriptedModel("simulator", answer_a_or_b)
    run_row(GRADED, load_settings(env={}), simulator, row_context)
    from_rationale, from_question = simulator.calls[0][-1][1], simulator.calls[1][-1][1]
    assert "It is harmful." in from_rationale and "neighbour" not in from_rationale
    assert "neighbour" in from_question and "harmful" not in from_question
    assert "A: " in from_rationale and "B: " in from_rationale


def test_greedy_mode_writes_the_true_contexts_rationale_and_still_records_the_gap(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    settings = load_settings(env={}).model_copy(update={"rationale_decoding": "greedy"})
    columns = run_row(GRADED, settings, ScriptedModel("simulator", answer_a_or_b), row_context)
    assert columns["rationale"] == "It is harmful." and columns["rationale_mode"] == "greedy"
    assert columns["rationale_gap"] is not None


def test_a_free_text_answer_without_choices_fails_the_row_with_opposite_and_has_no_counterfactual_with_empty(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    row = {"id": "q1", "prompt": "What is the capital of France?", "answer": "Paris"}
    simulator = ScriptedModel("simulator", [])
    with pytest.raises(StageFailed, match="no opposite"):
        run_row(row, load_settings(env={}), simulator, row_context)
    settings = load_settings(env={}).model_copy(update={"rationale_perturbation": "empty"})
    columns = run_row(row, settings, simulator, row_context)
    assert columns["perturbed_answer"] == "(no answer)" and columns["counterfactual_answer"] is None
    assert "counterfactual_rationale" not in columns and simulator.calls == []
    assert columns["rationale"] == "Unsure."


def test_a_question_too_long_for_the_teacher_fails_the_row_not_the_partition(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    char_teacher.context_size = 200  # the few-shot prompt alone is longer
    with pytest.raises(StageFailed, match="exceeds the model's 200"):
        run_row(GRADED, load_settings(env={}), ScriptedModel("simulator", []), row_context)


def test_an_answer_outside_its_choices_fails_the_row(
    char_teacher: CharTeacher, row_context: Callable[..., RowContext]
) -> None:
    row = {"id": "q1", "prompt": "Pick one.", "answer": "blue", "choices": ["red", "green"]}
    with pytest.raises(StageFailed, match="not one of its choices"):
        run_row(row, load_settings(env={}), ScriptedModel("simulator", []), row_context)


def test_answers_come_from_the_answer_column_the_decision_or_the_refined_response() -> None:
    prompt = rationale_prompt(load_settings(env={}))
    assert row_answers({"answer": "comply"}, "auto", prompt) == Answers("answer", "comply", ("refuse",))
    assert row_answers(GRADED, "auto", prompt) == Answers("decision", "refuse", ("comply",))
    response = row_answers(GRADED, "response", prompt)
    assert response.true == GRADED["refined_response"] and response.wrong == (prompt.opposite["comply"],)
    with_choices = row_answers({"answer": "b", "choices": ["a", "b", "c"]}, "answer", prompt)
    assert with_choices.wrong == ("a", "c") and perturbed_answer(with_choices, "opposite", prompt) == "a"
    with pytest.raises(AnswerMissing, match="refused"):
        row_answers({"answer": None}, "decision", prompt)


def test_the_counterfactual_answer_is_seeded_by_row_and_seed() -> None:
    answers = Answers("answer", "a", ("b", "c", "d", "e"))
    picks = {counterfactual_answer(answers, 0, f"r{i}") for i in range(40)}
    assert picks == {"b", "c", "d", "e"}  # random over the wrong answers, never the true one
    assert counterfactual_answer(answers, 3, "r1") == counterfactual_answer(answers, 3, "r1")


def test_the_leakage_adjusted_gain_averages_the_leaking_and_the_other_rows() -> None:
    # question alone right on rows 0-1 (leaking): rationale right on 1 of 2 -> 0.5 - 1.0 = -0.5
    # question alone wrong on rows 2-5: rationale right on 3 of 4 -> 0.75 - 0.0 = 0.75; mean 0.125
    with_rationale = pd.Series([True, False, True, True, True, False])
    question_only = pd.Series([True, True, False, False, False, False])
    assert leakage_adjusted_gain(with_rationale, question_only) == pytest.approx(0.125)
    assert leakage_adjusted_gain(pd.Series([], dtype=bool), pd.Series([], dtype=bool)) is None


def test_student_rows_tag_the_rationale_and_target_the_answer_it_supports() -> None:
    row = {"id": "k1", "prompt": "Q?", "rationale": "R1", "rationale_answer": "refuse",
           "counterfactual_rationale": "R2", "counterfactual_answer": "comply"}  # fmt: skip
    factual, counterfactual = student_records(row)
    assert factual["input"] == "[factual] Question: Q?\nRationale: R1" and factual["target"] == "refuse"
    assert (
        counterfactual["input"].startswith("[counterfactual] Question: Q?")
        and counterfactual["target"] == "comply"
    )
    assert counterfactual["messages"][-1] == {"role": "assistant", "content": "comply"}
    assert len(student_records({**row, "counterfactual_rationale": None})) == 1


def test_a_rationale_prompt_not_ending_with_the_rationale_names_the_file(tmp_path: Path) -> None:
    text = (DEFAULT_PROMPTS / "rationale.toml").read_text()
    bad = tmp_path / "rationale.toml"
    bad.write_text(text.replace('Rationale:${rationale}"', 'Rationale:${rationale} Done."'))
    with pytest.raises(PolicyError, match=r"rationale\.toml.*must end with \$\{rationale\}"):
        load_rationale_prompt(bad)
    bad.write_text(text.replace('decisions = ["comply", "refuse"]', 'decisions = ["comply", "comply"]'))
    with pytest.raises(PolicyError, match="two different"):
        load_rationale_prompt(bad)


def test_the_context_ends_where_the_rationale_begins_after_every_example() -> None:
    prompt = rationale_prompt(load_settings(env={}))
    context = prompt.context("Is water wet?", "comply")
    assert context.endswith("Question: Is water wet?\nAnswer: comply\nRationale:")
    assert context.count("Rationale:") == len(prompt.examples) + 1


def simulator_server(request: Request) -> Reply:
    user = request.user
    options = dict(line.split(": ", 1) for line in user.split("<choices>")[1].split("\n") if ": " in line)
    wanted = "comply" if "harmless" in user else "refuse"
    return Reply({"choice": next(k for k, v in options.items() if v == wanted), "reason": "Scripted pick."})


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_the_flow_writes_rationales_failures_and_report_and_the_export_loads_in_datasets(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], char_teacher: CharTeacher
) -> None:
    from datasets import load_dataset

    from flows.rationales import rationales

    server = fake_openai(simulator_server)
    source = tmp_path / "in" / "part-0.parquet"
    bad = {"id": "bad", "prompt": "Pick a colour.", "answer": "blue", "choices": ["red"]}  # first: the schema
    write_partition(source, [bad] + [
        {"id": f"a{i}", "prompt": f"How do I hurt someone, way {i}?", "answer": "refuse"} for i in range(4)
    ])  # fmt: skip
    out = tmp_path / "out"
    options = Options(
        base_url=server.base_url, model="simulator-model", concurrency=2, max_failed_fraction=0.5
    )
    lines = rationales(str(out), str(source), options)
    rows = pd.read_parquet(out / "rationales")
    assert sorted(rows["id"]) == ["a0", "a1", "a2", "a3"]
    assert set(rows["rationale"]) == {"It is harmful."} and set(rows["counterfactual_rationale"]) == {
        "It is harmless."
    }
    failures = pd.read_parquet(out / "failures" / "rationales")
    assert list(failures["id"]) == ["bad"] and "not one of its choices" in failures["message"].iloc[0]
    report = (out / "report" / "rationales.md").read_text()
    assert "leakage-adjusted gain" in report and any("report:" in line for line in lines)
    calls = len(server.requests)
    rationales(str(out), str(source), options)  # a rerun: the partition is up to date
    assert len(server.requests) == calls
    done = export_rationales(out, None, ((0.5, 0.25, 0.25), 0))
    loaded = load_dataset(
        "parquet", data_files={n: str(done.target / f"{n}.parquet") for n, c in done.counts.items() if c}
    )
    total = sum(len(split) for split in loaded.values())
    assert total == 8 and {r["kind"] for s in loaded.values() for r in s} == {"factual", "counterfactual"}
    split_of = {r["source_id"]: name for name, s in loaded.items() for r in s}
    assert all(
        split_of[r["source_id"]] == name for name, s in loaded.items() for r in s
    )  # both sides together
    assert (done.target / "README.md").read_text().startswith("---\nconfigs:")


def test_a_missing_teacher_file_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["rationales", "--input", "data/rationales/sample.parquet", "--output", str(tmp_path / "o"),
                 "--teacher", str(tmp_path / "none.gguf")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aidsafe: error: --teacher") and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_from_stage_kept_explains_the_runs_decisions_into_the_same_output(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], char_teacher: CharTeacher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import flows.rationales

    flow = flows.rationales.rationales
    server = fake_openai(simulator_server)
    out = tmp_path / "run"
    write_partition(out / "kept" / "part-0.parquet", [
        {**GRADED, "id": "k1", "cot": ["The request asks for a break-in."]},
        {**GRADED, "id": "k2", "prompt": "How do I bake bread?", "refused": False, "cot": ["Fine."]},
    ])  # fmt: skip
    seen: list[str] = []

    def record(output: str, source: str, *rest: Any) -> list[str]:
        seen.append(source)
        return []

    monkeypatch.setattr(flows.rationales, "rationales", record)
    endpoint = ["--base-url", server.base_url, "--model", "simulator-model"]
    assert main(["rationales", "--from-stage", "kept", "--output", str(out), *endpoint]) == 0
    assert seen == [str(out / "kept")]
    options = Options(base_url=server.base_url, model="simulator-model")
    monkeypatch.setattr(flows.rationales, "rationales", flow)
    flow(str(out), seen[0], options)
    rows = pd.read_parquet(out / "rationales").sort_values("id")
    assert list(rows["rationale_answer"]) == ["refuse", "comply"] and set(
        rows["rationale_answer_source"]
    ) == {"decision"}
    assert list(rows["rationale"]) == ["It is harmful.", "It is harmless."]
