"""The console command: subcommands and options derived from the pipeline and the settings table, and user
errors as one line (the flow runs themselves are tested in test_flow.py and test_run_flow.py)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aidsafe.cli import build_parser, main
from aidsafe.config import DEFAULT_PROMPTS
from aidsafe.pipeline import PIPELINE
from aidsafe.stage import INPUT
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI


def subcommands() -> dict[str, str]:
    """Subcommand -> its help text, as argparse shows them."""
    return {name: parser.format_help() for name, parser in _choices().items()}


def _choices() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return dict(action.choices or {})


def test_every_pipeline_step_is_a_subcommand_in_pipeline_order() -> None:
    names = list(_choices())
    assert names == [
        "run",
        *(s.name for s in PIPELINE),
        "retry",
        "export",
        "eval",
        "rationales",
        "traces",
        "train",
        "sample",
        "prune",
    ]


@pytest.mark.parametrize("step", PIPELINE, ids=lambda s: s.name)
def test_a_step_takes_input_only_when_it_reads_the_input(step: object) -> None:
    text = subcommands()[step.name]  # type: ignore[attr-defined]
    assert ("--input" in text) == (step.reads == INPUT)  # type: ignore[attr-defined]


def test_stage_specific_options_appear_only_where_that_stage_runs() -> None:
    helps = subcommands()
    assert "--attempts" in helps["dpo"] and "--attempts" in helps["retry"]
    assert "--attempts" not in helps["generate"] and "--attempts" not in helps["run"]
    for name in ("generate", "refine", "run", "retry", "dpo"):
        assert "--prompts" in helps[name] and "--max-rounds" in helps[name], name
    assert "--max-rounds" not in helps["report"] and "--min-score" in helps["report"]
    assert "--api-key" not in "".join(helps.values())  # keys come only from the environment


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--max-rounds", "0"], "--max-rounds 0: must be at least 1 and at most 50"),
        (["generate", "--max-rounds", "two"], "--max-rounds two: Input should be a valid integer"),
        (["generate", "--concurrency", "0"], "--concurrency 0: must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "--min-score", "bogus=3"], "unknown metric 'bogus'"),
        (["run", "--min-score", "relevance=9"], "between 1 and 5"),
    ],
)
def test_a_bad_option_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    if argv[0] != "frobnicate":
        argv = [*argv, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
        if argv[0] not in ("generate", "run"):
            argv.remove("--input")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aidsafe: error: ") and message in err and err.count("\n") == 1, err


def test_the_installed_command_prints_no_traceback_for_an_invalid_value(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aidsafe.cli", "generate", "--input", "x", "--output", str(tmp_path),
         "--max-rounds", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "aidsafe: error: --max-rounds 0: must be at least 1 and at most 50\n"


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_prompts_option_points_the_run_at_another_prompt_directory(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS, prompts)
    intent = prompts / "intent.toml"
    intent.write_text(intent.read_text().replace("Task: intent decomposition.", "Task: MARKER-7 intents."))
    server = fake_openai()
    write_partition(tmp_path / "in" / "p.parquet", [{"id": "a", "prompt": "How do I kill a process?"}])
    argv = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--base-url",
            server.base_url, "--model", "m", "--prompts", str(prompts), "--max-rounds", "1"]  # fmt: skip
    assert main(argv) == 0
    intent_calls = [r for r in server.requests if r.tool == "IntentList"]
    assert len(intent_calls) == 1 and "Task: MARKER-7 intents." in intent_calls[0].system
