"""The console command's help (the flow runs are tested in test_flow.py)."""

from __future__ import annotations

import pytest

from aidsafe.cli import main


def test_generate_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    options = "--input --output --config --policies --concurrency --max-rounds --agents"
    options += " --base-url --model --max-tokens"
    for word in [*options.split(), "OPENAI_BASE_URL", "embedded"]:
        assert word in text
    assert "--api-key" not in text  # keys come only from the environment


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2 and "invalid choice" in capsys.readouterr().err
