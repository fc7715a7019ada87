"""Faults from the model server: with 20% of calls faulty, every row ends in the output or the failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aidsafe.config import Options
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FAULTS, FakeOpenAI, random_faults

pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")

generate = FLOWS["generate"]


def test_a_run_survives_twenty_percent_faulty_calls(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(faults=random_faults(0.2, seed=3), timeout_sleep=2.0)
    for p in range(2):
        rows = [{"id": f"p{p}-{i}", "prompt": f"Question {i}?"} for i in range(12)]
        write_partition(tmp_path / "in" / f"part-{p}.parquet", rows)
    config = tmp_path / "aidsafe.toml"
    config.write_text(
        f'[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\ntimeout = 1.0\nmax_retries = 3\n'
        "structured_retries = 2\n"
    )
    summary = generate(
        output=str(tmp_path / "out"),
        input=str(tmp_path / "in"),
        options=Options(config=config, concurrency=4),
    )
    sent = Counter(server.faults_sent)
    assert set(sent) == set(FAULTS), sent  # every kind of fault was exercised
    done = pq.read_table(tmp_path / "out" / "generated").column("id").to_pylist()
    failures = pq.read_table(tmp_path / "out" / "failures").to_pylist()
    assert sorted(done + [f["id"] for f in failures]) == sorted(
        f"p{p}-{i}" for p in range(2) for i in range(12)
    )
    assert all(f["stage"] in {"intent", "draft", "deliberation"} and f["message"] for f in failures)
    assert summary.rows_ok == len(done) and len(done) >= 20  # retries recovered almost every row


def test_permanent_errors_fail_fast(tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(faults=lambda request, n: "401" if request.tool == "IntentList" else None)
    write_partition(tmp_path / "in" / "p.parquet", [{"id": f"r{i}", "prompt": f"Q {i}?"} for i in range(3)])
    options = Options(base_url=server.base_url, model="m", max_failed_fraction=1.0)
    summary = generate(output=str(tmp_path / "out"), input=str(tmp_path / "in"), options=options)
    failures = pq.read_table(tmp_path / "out" / "failures").to_pylist()
    assert summary.rows_ok == 0 and len(failures) == 3
    assert {(f["stage"], f["error_type"]) for f in failures} == {("intent", "AuthenticationError")}
    assert len(server.requests) == 3  # one call per row: no retry of a permanent error
