"""One writer per output directory: a live holder gives a clear error; a dead one's lock is taken over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aidsafe.cli import main
from aidsafe.lock import output_lock

HOLD = """
import sys, time
from aidsafe.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_live_holder_blocks_a_second_writer_and_a_killed_one_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["prune", "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"aidsafe: error: {tmp_path.resolve()}: in use by pid {holder.pid} on ")
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel releases the lock
        holder.wait()
    assert main(["prune", "--output", str(tmp_path)]) == 0


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    with output_lock(tmp_path), output_lock(tmp_path / "."):
        done = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode != 0 and "OutputLocked" in done.stderr  # another process: refused
    with output_lock(tmp_path):  # released: taken again
        pass
