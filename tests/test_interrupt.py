"""Ctrl-C, SIGTERM and SIGKILL on a real `aidsafe` process: it ends in seconds and leaves no server behind.

The end-to-end cases run the real command in its own process group (as a terminal runs a job), with no
PREFECT_API_URL (so aidsafe starts its temporary Prefect API) and the real embedded model server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aidsafe.children import reap_orphans, start_time
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI
from tests.test_crash import finished, start, wait_for

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set[int]:
    """Every running process below pid."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and start_time(int(entry.name)) is not None:
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if start_time(pid) is not None}


def start_real(tmp_path: Path) -> subprocess.Popen[str]:
    """`aidsafe generate` on one prompt, embedded model, no Prefect API configured, own process group."""
    write_partition(
        tmp_path / "in" / "p.parquet", [{"id": "r1", "prompt": "How do I kill a Python process?"}]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OPENAI_", "AIDSAFE_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "aidsafe.cli", "generate", "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--max-rounds", "1"]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def serving(process: subprocess.Popen[str], tmp_path: Path) -> set[int]:
    """Wait until both servers run and the model is answering; return the process tree."""
    log = tmp_path / "out" / "logs" / "embedded-server.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and "GET /v1/models" in log.read_text(errors="replace"):
            time.sleep(2.0)  # now inside the first model calls
            tree = descendants(process.pid)
            assert len(tree) >= 2, tree  # the temporary Prefect API and the embedded server
            return tree
        time.sleep(0.2)
    raise AssertionError(f"never served; exit {process.poll()}: {process.communicate()[1][-2000:]}")


def records(tmp_path: Path) -> list[Path]:
    return list((tmp_path / f"aidsafe-{os.getuid()}" / "children").glob("*.json"))


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("sig", "to_group", "code"), [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)]
)
def test_an_interrupted_run_exits_within_10_s_and_stops_both_servers(
    tmp_path: Path, sig: signal.Signals, to_group: bool, code: int
) -> None:
    process = start_real(tmp_path)
    tree = serving(process, tmp_path)
    sent = time.monotonic()
    os.killpg(process.pid, sig) if to_group else process.send_signal(sig)  # Ctrl-C reaches the whole group
    _, err = process.communicate(timeout=30)
    assert process.returncode == code and time.monotonic() - sent < 10, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(f"aidsafe: interrupted ({sig.name})")
    assert not running(tree) and not records(tmp_path)


@pytest.mark.e2e
def test_a_killed_run_leaves_no_server_and_the_next_run_completes(tmp_path: Path) -> None:
    process = start_real(tmp_path)
    tree = serving(process, tmp_path)
    process.send_signal(signal.SIGKILL)  # no clean-up runs in aidsafe itself
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while running(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(tree)  # the kernel stopped them with their parent (PR_SET_PDEATHSIG)
    assert records(tmp_path)  # what the next run reads to stop them had they survived
    again = start_real(tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert not records(tmp_path)


STUBBORN = """
import os, sys, time
from aidsafe.children import spawn
child = spawn("stubborn server", [sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
    open(os.devnull, "wb"))
print(child.pid, flush=True)
time.sleep(300)
"""


def test_the_next_run_stops_a_server_that_survived_its_killed_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN], env={**os.environ, "TMPDIR": str(tmp_path)},
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has started and ignores SIGTERM
    assert reap_orphans() == [] and running({child})  # its parent lives: not an orphan
    parent.kill()
    parent.wait()
    time.sleep(0.5)
    assert running({child})  # it ignored the kernel's SIGTERM
    assert reap_orphans() == [f"stubborn server (pid {child}) of a killed run (pid {parent.pid})"]
    assert not running({child}) and not records(tmp_path)


@pytest.mark.usefixtures("prefect_api")
def test_ctrl_c_keeps_finished_partitions_and_the_rerun_skips_them(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(latency=0.15)
    source, out = tmp_path / "in", tmp_path / "out"
    for p in range(6):
        write_partition(
            source / f"part-{p}.parquet", [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(4)]
        )
    process = start(source, out, server)
    wait_for(process, lambda: bool(finished(out)))
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130
    kept = finished(out)
    assert 0 < len(kept) < 6
    assert start(source, out, server).wait(timeout=300) == 0
    after = finished(out)
    assert len(after) == 6 and all(after[name] == mtime for name, mtime in kept.items())
