"""One partition without Prefect: bounded concurrency, transient failures, retry classification."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefect.states import Completed, Failed

from aidsafe.config import load_settings
from aidsafe.errors import InputError, StructuredOutputError, TransientFailures
from aidsafe.execute import PartitionJob, is_done, run_partition
from aidsafe.partitions import RowRef, stored_fingerprint
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stage import RowContext
from aidsafe.stages.generate import GENERATE
from flows.tasks import retry_transient
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script


def job_for(
    tmp_path: Path, server: FakeOpenAI, policy_set: PolicySet, n: int, **settings: object
) -> PartitionJob:
    source = write_partition(
        tmp_path / "in" / "p.parquet", [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(n)]
    )
    config = tmp_path / "aidsafe.toml"
    config.write_text(f'[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\nmax_retries = 0\n')
    live = load_settings(config, overrides=settings, env={})
    return PartitionJob(
        stage="generate",
        input_path=source,
        output_dir=tmp_path / "out",
        settings=live,
        policies=policy_set,
        stage_key="key-1",
        fingerprint="fp-1",
    )


def test_rows_run_concurrently_up_to_the_bound(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    server = fake_openai(latency=0.2)
    job = job_for(tmp_path, server, policy_set, n=8, concurrency=3)
    result = run_partition(GENERATE, job, prompts)
    assert result.status == "done" and result.rows_ok == 8
    assert server.max_in_flight == 3
    assert is_done(GENERATE, job) and stored_fingerprint(job.output_path(GENERATE)) == "fp-1"


def test_transient_failures_keep_rows_but_leave_the_partition_unfinished(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    def script(request: Request) -> Reply:
        if "q 1" in request.text and request.tool == "Draft":
            raise RuntimeError("backend overloaded")  # the test server answers 500
        return default_script(request)

    server = fake_openai(script)
    job = job_for(tmp_path, server, policy_set, n=3)
    with pytest.raises(TransientFailures, match="1 row"):
        run_partition(GENERATE, job, prompts)
    assert pq.read_table(job.output_path(GENERATE)).column("id").to_pylist() == ["r0", "r2"]
    failure = pq.read_table(job.failures_path).to_pylist()[0]
    assert (failure["id"], failure["stage"], failure["error_type"]) == (
        "r1",
        "draft",
        "InternalServerError",
    )  # a 500
    assert "backend overloaded" in failure["message"]
    assert not is_done(GENERATE, job)  # the next run (or Prefect's task retry) redoes it


def test_only_transient_errors_are_retried() -> None:
    assert retry_transient(None, None, Failed(data=TransientFailures("p: 2 rows")))
    assert not retry_transient(None, None, Failed(data=InputError("p.parquet", "missing column")))
    assert not retry_transient(None, None, Failed(data=StructuredOutputError("invalid")))
    assert not retry_transient(None, None, Completed(data=1))


async def _buggy(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    raise KeyError("a bug in the stage, not a model or input error")


def test_a_bug_in_a_stage_fails_the_partition_and_writes_nothing(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], policy_set: PolicySet, prompts: PromptSet
) -> None:
    job = job_for(tmp_path, fake_openai(), policy_set, n=3)
    with pytest.raises(KeyError, match="a bug in the stage"):
        run_partition(dataclasses.replace(GENERATE, process=_buggy), job, prompts)
    assert not job.output_path(GENERATE).exists() and not job.failures_path.exists()
    assert not is_done(GENERATE, job)
