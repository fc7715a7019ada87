"""Fail fast: every mistake that needs no model is one `aidsafe: error:` line, exit 2, within 3 s (of CPU),
before any Prefect machinery starts (the installed command, in a subprocess, as a user meets it)."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aidsafe.config import DEFAULT_POLICIES, PROJECT_ROOT
from tests.conftest import write_partition

AIDSAFE = str(Path(sys.executable).parent / "aidsafe")
SECRET = "sk-preflight-secret-0042"
Setup = Callable[[Path], list[str]]


def good_input(root: Path) -> Path:
    write_partition(root / "in" / "p.parquet", [{"id": "a", "prompt": "How do I kill a process?"}])
    return root / "in"


def command(root: Path, *extra: str, name: str = "generate") -> list[str]:
    return [name, "--input", str(good_input(root)), "--output", str(root / "out"), *extra]


def huge_policies(root: Path) -> list[str]:
    policies = root / "policies"
    shutil.copytree(DEFAULT_POLICIES, policies)
    (policies / "09_huge.toml").write_text(f'id = "huge"\ntitle = "Huge"\ntext = """{"x " * 500_000}"""\n')
    return command(root, "--policies", str(policies))


def corrupt_input(root: Path) -> list[str]:
    (root / "bad.parquet").write_bytes(b"not parquet")
    return ["generate", "--input", str(root / "bad.parquet"), "--output", str(root / "o")]


def output_is_a_file(root: Path) -> list[str]:
    (root / "file").write_text("x")
    return [*command(root)[:-1], str(root / "file")]


def key_as_api_key_env(root: Path) -> list[str]:
    return config(root, f'[endpoint]\nbase_url = "http://x.test/v1"\nmodel = "m"\napi_key_env = "{SECRET}"')


def config(root: Path, text: str) -> list[str]:
    (root / "c.toml").write_text(text)
    return command(root, "--config", str(root / "c.toml"))


CASES: dict[str, tuple[Setup, str]] = {
    "threshold out of range": (
        lambda r: command(r, "--min-score", "relevance=9", name="run"), "between 1 and 5"
    ),
    "unknown metric": (lambda r: command(r, "--min-score", "bogus=3", name="run"), "unknown metric 'bogus'"),
    "zero concurrency": (lambda r: command(r, "--concurrency", "0"), "--concurrency 0: must be at least 1"),
    "tiny max tokens": (lambda r: command(r, "--max-tokens", "5"), "--max-tokens 5: must be at least 16"),
    "zero rounds": (lambda r: command(r, "--max-rounds", "0"), "--max-rounds 0: must be at least 1"),
    "bad config value": (lambda r: config(r, "max_rounds = 0\n"), "c.toml: max_rounds: must be at least 1"),
    "bad policy file": (lambda r: command(r, "--policies", str(r)), "no policy files"),
    "policies too long for the model": (huge_policies, "do not fit the model context of 8,192 tokens"),
    "missing input": (
        lambda r: ["generate", "--input", str(r / "nope"), "--output", str(r / "o")], "input not found"
    ),
    "no usable partition": (corrupt_input, "no usable partition"),
    "output is a file": (output_is_a_file, "is a file"),
    "output inside the input": (
        lambda r: [*command(r)[:-1], str(r / "in" / "out")], "inside the input"
    ),
    "output not writable": (lambda r: [*command(r)[:-1], "/proc/aidsafe-out"], "not writable"),
    "stage before its input": (lambda r: ["refine", "--output", str(r)], "run `aidsafe generate` before"),
    "key pasted as api_key_env": (key_as_api_key_env, "must be the NAME of an environment variable"),
    "key inside the base URL": (
        lambda r: command(r, "--base-url", f"https://user:{SECRET}@x.example/v1", "--model", "m"),
        "https://***@x.example/v1 carries credentials",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_exit_2_within_3_seconds(tmp_path: Path, case: str) -> None:
    setup, message = CASES[case]
    argv = setup(tmp_path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([AIDSAFE, *argv], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command (wall time on a loaded CI machine would measure the machine, not aidsafe)
    seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("aidsafe: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and SECRET not in done.stderr + done.stdout
    assert seconds < 3, f"{case}: {seconds:.1f} CPU s"
