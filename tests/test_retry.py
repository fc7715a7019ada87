"""Retrying failed rows: only the rows in the failures tables (and what depends on them) are redone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aidsafe.cli import main
from aidsafe.config import Options
from flows.run import run
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script

pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")

generate = FLOWS["generate"]


def rows_of(out: Path, directory: str) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in pq.read_table(out / directory).to_pylist()}


def test_retry_redoes_only_the_failed_rows(tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]) -> None:
    backend = {"broken": True}

    def script(request: Request) -> Reply:
        if backend["broken"] and request.tool == "Draft" and "FRAGILE" in request.text:
            return Reply({"thoughts": [], "response": ""})  # invalid every time: the row fails at draft
        return default_script(request)

    server = fake_openai(script)
    rows = [{"id": "a", "prompt": "Solid question?"}, {"id": "b", "prompt": "FRAGILE question?"}]
    write_partition(tmp_path / "in" / "p.parquet", rows)
    out = tmp_path / "out"
    run(
        str(tmp_path / "in"),
        str(out),
        Options(base_url=server.base_url, model="m", max_rounds=1, max_failed_fraction=1.0),
    )
    assert set(rows_of(out, "graded")) == {"a"}
    assert [f["id"] for f in pq.read_table(out / "failures" / "generate").to_pylist()] == ["b"]
    first = rows_of(out, "graded")["a"]
    backend["broken"] = False
    before = len(server.requests)
    assert (
        main(
            [
                "retry",
                "--output",
                str(out),
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--max-rounds",
                "1",
            ]
        )
        == 0
    )
    redone = server.requests[before:]
    assert all("FRAGILE" in r.text for r in redone)  # nothing for the finished row
    assert Counter(r.tool for r in redone) == {
        "IntentList": 1,
        "Draft": 1,
        "Verdict": 1,
        "Refinement": 1,
        "Grades": 1,
    }
    graded = rows_of(out, "graded")
    assert (
        set(graded) == {"a", "b"} and graded["a"]["graded_at"] == first["graded_at"]
    )  # kept, not recomputed
    assert pq.read_table(out / "failures" / "generate").num_rows == 0  # b left the failures table
    assert set(rows_of(out, "kept")) == {"a", "b"}


def test_added_rows_are_the_only_rows_processed(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    options = Options(base_url=server.base_url, model="m", max_rounds=1, max_failed_fraction=1.0)
    source = tmp_path / "in" / "p.parquet"
    write_partition(source, [{"id": "a", "prompt": "One?"}])
    generate(output=str(tmp_path / "out"), input=str(source.parent), options=options)
    first = rows_of(tmp_path / "out", "generated")["a"]["created_at"]
    write_partition(source, [{"id": "a", "prompt": "One?"}, {"id": "b", "prompt": "Two?"}])
    before = len(server.requests)
    summary = generate(output=str(tmp_path / "out"), input=str(source.parent), options=options)
    assert len(server.requests) - before == 3 and all("Two?" in r.user for r in server.requests[before:])
    assert summary.partitions[0].rows_reused == 1 and summary.rows_ok == 2
    assert rows_of(tmp_path / "out", "generated")["a"]["created_at"] == first
    write_partition(source, [{"id": "a", "prompt": "One, changed?"}, {"id": "b", "prompt": "Two?"}])
    before = len(server.requests)
    generate(output=str(tmp_path / "out"), input=str(source.parent), options=options)
    assert len(server.requests) - before == 3 and all(
        "One, changed?" in r.user for r in server.requests[before:]
    )
