"""Checkpoints inside a partition: finished rows saved in chunks survive a kill and are reused by the rerun,
never twice; the chunks are invisible to readers of the outputs and gone once the partition is written."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL

from aidsafe.checkpoint import CHECKPOINTS, Checkpoint, checkpoint_dir, chunk_paths
from aidsafe.config import load_settings
from aidsafe.errors import StageFailed, StructuredOutputError
from aidsafe.execute import PartitionJob, run_partition
from aidsafe.output import output_table
from aidsafe.partitions import RowRef, stored_meta, write_atomic
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stage import RowContext
from aidsafe.stages.generate import GENERATE
from aidsafe.summary import partition_files
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script

CALLS_PER_ROW = 3  # generate with --max-rounds 1: intent, draft, one deliberation turn
MARK = re.compile(r"row-(\d{3})")


def prompt(i: int) -> str:
    return f"row-{i:03d}: how do I bake bread?"


def rows_asked(requests: list[Request]) -> list[str]:
    """The rows the model was asked about, one entry per call (from the row marker in the prompt)."""
    return [f"r{match.group(1)}" for r in requests if (match := MARK.search(r.user))]


def chunk_ids(directory: Path) -> list[str]:
    return [i for path in chunk_paths(directory) for i in pq.read_table(path).column("id").to_pylist()]


# --- a real run, killed with SIGKILL in the middle of its only partition -------------------------------


def start(source: Path, out: Path, server: FakeOpenAI) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "OPENAI_BASE_URL": server.base_url,
           "AIDSAFE_MODEL": "m", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    command = [sys.executable, "-m", "aidsafe.cli", "generate", "--input", str(source), "--output", str(out),
               "--concurrency", "2", "--max-rounds", "1", "--checkpoint-rows", "5"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def started_rows(server: FakeOpenAI) -> int:
    """Rows that have asked for their intents (their first call)."""
    return len(set(rows_asked([r for r in list(server.requests) if r.tool == "IntentList"])))


@pytest.mark.usefixtures("prefect_api")
def test_a_killed_partition_keeps_its_finished_chunks_and_the_rerun_sends_only_the_other_rows(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(latency=0.05)
    source, out, rows = tmp_path / "in", tmp_path / "out", 40
    write_partition(source / "part.parquet", [{"id": f"r{i:03d}", "prompt": prompt(i)} for i in range(rows)])
    process = start(source, out, server)
    # with 2 rows in flight, a row starts only when an earlier one is done (chunk written): the 18th row
    # asked for its intents means at least 16 rows are done, so at least 3 chunks of 5 are on disk
    deadline = time.monotonic() + 120
    while started_rows(server) < 18 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert started_rows(server) >= 18, "the run ended before it was killed"
    chunks = checkpoint_dir(out, "generate", "part")
    saved = chunk_ids(chunks)
    assert len(saved) >= 15 and len(set(saved)) == len(saved), saved
    for path in chunk_paths(chunks):  # complete output rows, marked with the stage key; 5 per chunk
        table = pq.read_table(path)
        assert table.num_rows == 5 and stored_meta(path)["stage_key"], path
        assert set(table.column("response").to_pylist()) == {"Here is a helpful answer."}
    assert not partition_files(out / "generated")  # no reader of the stage directory sees them

    requests_before = len(server.requests)
    assert start(source, out, server).wait(timeout=300) == 0
    ids = pq.read_table(out / "generated").column("id").to_pylist()
    assert sorted(ids) == [f"r{i:03d}" for i in range(rows)]  # each id exactly once
    assert not chunks.exists() and not list((out / CHECKPOINTS).rglob("*.parquet"))
    asked = rows_asked(server.requests[requests_before:])
    assert set(asked) == {f"r{i:03d}" for i in range(rows)} - set(saved)  # chunk rows were not asked again
    assert len(asked) == len(server.requests) - requests_before == CALLS_PER_ROW * (rows - len(saved))


# --- the Checkpoint itself ------------------------------------------------------------------------------

ADDED = pa.schema([("answer", pa.string())])
INPUT = pa.table({"id": ["a", "b", "c"], "prompt": ["p", "q", "r"]})


def checkpoint(directory: Path, rows: int, seconds: float) -> Checkpoint:
    def build(refs: list[RowRef], values: list[dict[str, Any]]) -> pa.Table:
        return output_table(INPUT, refs, values, ADDED)

    return Checkpoint(directory, build, {"stage_key": "k"}, rows, seconds)


def finish(saver: Checkpoint, index: int) -> None:
    saver.add(RowRef(index, INPUT["id"][index].as_py(), "p"), {"answer": f"answer {index}"})


async def test_the_time_trigger_writes_a_chunk_before_checkpoint_rows_rows_have_finished(
    tmp_path: Path,
) -> None:
    saver = checkpoint(tmp_path / "cp", rows=500, seconds=0.05)
    async with saver.saving():
        finish(saver, 0)
        finish(saver, 1)
        assert not chunk_paths(tmp_path / "cp")
        await asyncio.sleep(0.3)
        assert chunk_ids(tmp_path / "cp") == ["a", "b"]
        finish(saver, 2)
        await asyncio.sleep(0.3)
    assert [p.name for p in chunk_paths(tmp_path / "cp")] == ["chunk-00001.parquet", "chunk-00002.parquet"]
    assert chunk_ids(tmp_path / "cp") == ["a", "b", "c"]
    assert pq.read_table(chunk_paths(tmp_path / "cp")[1]).to_pylist() == [
        {"id": "c", "prompt": "r", "answer": "answer 2"}
    ]
    assert stored_meta(chunk_paths(tmp_path / "cp")[0])["stage_key"] == "k"


async def test_the_row_trigger_writes_full_chunks_and_a_new_run_numbers_on(tmp_path: Path) -> None:
    saver = checkpoint(tmp_path / "cp", rows=2, seconds=3600)
    async with saver.saving():
        for index in range(3):
            finish(saver, index)
    assert chunk_ids(tmp_path / "cp") == ["a", "b"]  # the third row waits for the next chunk
    again = checkpoint(tmp_path / "cp", rows=1, seconds=3600)
    finish(again, 2)  # must not overwrite chunk 1, whose rows a rerun reuses
    assert [p.name for p in chunk_paths(tmp_path / "cp")] == ["chunk-00001.parquet", "chunk-00002.parquet"]
    assert chunk_ids(tmp_path / "cp") == ["a", "b", "c"]


# --- one partition without Prefect --------------------------------------------------------------------


def job_for(
    tmp_path: Path, server: FakeOpenAI, policy_set: PolicySet, n: int, **settings: Any
) -> PartitionJob:
    source = write_partition(
        tmp_path / "in" / "p.parquet", [{"id": f"r{i:03d}", "prompt": prompt(i)} for i in range(n)]
    )
    config = tmp_path / "aidsafe.toml"
    config.write_text(f'[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\nmax_retries = 0\n')
    live = load_settings(config, overrides={"max_rounds": 1, "concurrency": 1, **settings}, env={})
    return PartitionJob(stage="generate", input_path=source, output_dir=tmp_path / "out", settings=live,
                        policies=policy_set, stage_key="key-1", fingerprint="fp-1")  # fmt: skip


def test_the_time_trigger_saves_finished_rows_while_the_partition_runs(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    seen: dict[int, list[str]] = {}
    job: list[PartitionJob] = []

    def script(request: Request) -> Reply:  # looks at the chunks when the last row's first call arrives
        if "row-003" in request.user and request.tool == "IntentList":
            seen[3] = chunk_ids(job[0].checkpoint_dir)
        return default_script(request)

    server = fake_openai(script, latency=0.05)
    job.append(job_for(tmp_path, server, policy_set, n=4, checkpoint_rows=500, checkpoint_seconds=0.1))
    result = run_partition(GENERATE, job[0], prompts)
    assert result.rows_ok == 4
    assert seen[3] and set(seen[3]) <= {"r000", "r001", "r002"}  # saved by time, far below 500 rows
    assert not job[0].checkpoint_dir.exists()  # removed once the output file was written


def test_a_bug_keeps_the_finished_rows_but_not_the_failed_ones_and_the_rerun_redoes_only_the_rest(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    async def flaky(row: RowRef, ctx: RowContext) -> dict[str, Any]:
        if row.id == "r001":
            raise StageFailed("draft", StructuredOutputError("the model rejects this prompt"))
        if row.id == "r003":
            raise KeyError("a bug in the stage")
        return await GENERATE.process(row, ctx)

    server = fake_openai()
    job = job_for(tmp_path, server, policy_set, n=5, checkpoint_rows=500)
    with pytest.raises(KeyError, match="a bug"):
        run_partition(dataclasses.replace(GENERATE, process=flaky), job, prompts)
    assert not job.output_path(GENERATE).exists()
    assert chunk_ids(job.checkpoint_dir) == ["r000", "r002"]  # the failed row r001 is not checkpointed
    before = len(server.requests)
    result = run_partition(GENERATE, job, prompts)
    assert (result.rows_ok, result.rows_reused) == (5, 2)
    assert sorted(set(rows_asked(server.requests[before:]))) == ["r001", "r003", "r004"]
    assert pq.read_table(job.output_path(GENERATE)).column("id").to_pylist() == [
        f"r{i:03d}" for i in range(5)
    ]
    assert not job.checkpoint_dir.exists()


def test_a_row_both_in_the_previous_output_and_in_a_chunk_is_written_once(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    server = fake_openai()
    job = job_for(tmp_path, server, policy_set, n=3)
    run_partition(GENERATE, job, prompts)
    previous = pq.read_table(job.output_path(GENERATE))
    write_atomic(previous.slice(1), job.checkpoint_dir / "chunk-00001.parquet", {"stage_key": "key-1"})
    job = job_for(tmp_path, server, policy_set, n=4)  # one row added
    before = len(server.requests)
    result = run_partition(GENERATE, job, prompts)
    assert (result.rows_ok, result.rows_reused) == (4, 3)
    assert set(rows_asked(server.requests[before:])) == {"r003"}
    assert pq.read_table(job.output_path(GENERATE)).column("id").to_pylist() == [
        "r000",
        "r001",
        "r002",
        "r003",
    ]


def test_chunks_made_with_other_settings_are_not_reused(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    server = fake_openai()
    job = job_for(tmp_path, server, policy_set, n=2)
    run_partition(GENERATE, job, prompts)
    old = job.checkpoint_dir.parent / "old"
    write_atomic(
        pq.read_table(job.output_path(GENERATE)), old / "chunk-00001.parquet", {"stage_key": "key-0"}
    )
    job.output_path(GENERATE).unlink()
    shutil.move(old, job.checkpoint_dir)
    before = len(server.requests)
    result = run_partition(GENERATE, job, prompts)
    assert result.rows_reused == 0
    assert len(server.requests) - before == 2 * CALLS_PER_ROW
