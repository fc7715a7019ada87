"""The generate flow through a real Prefect API and real HTTP to the test server."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import aidsafe.pipeline
from aidsafe.cli import main
from aidsafe.config import DEFAULT_POLICIES, Options
from aidsafe.errors import PartitionsFailed
from aidsafe.partitions import RowRef
from aidsafe.policies import load_policies
from aidsafe.stage import RowContext
from aidsafe.stages.generate import COLUMNS as GENERATED
from aidsafe.stages.generate import GENERATE
from aidsafe.summary import StageSummary
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script

generate = FLOWS["generate"]
pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")
SCHEMA = pa.schema(
    [("id", pa.string()), ("prompt", pa.string()), ("label", pa.string()), ("score", pa.int64())]
)


def rows(prefix: str, n: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}-{i}", "prompt": f"How do I kill process {i}?", "label": "safe", "score": i}
            for i in range(n)]  # fmt: skip


def make_input(root: Path, partitions: int = 2, per: int = 3) -> Path:
    for p in range(partitions):
        write_partition(root / f"part-{p}.parquet", rows(f"p{p}", per), SCHEMA)
    return root


def run(server: FakeOpenAI, source: Path, out: Path, **extra: Any) -> StageSummary:
    options = Options(base_url=server.base_url, model="test-model", **extra)
    return generate(input=str(source), output=str(out), options=options)


def test_generate_writes_one_partition_per_input(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    options = Options(base_url=server.base_url, model="test-model", concurrency=2)
    state = generate(input=str(make_input(tmp_path / "in")), output=str(tmp_path / "out"), options=options,
                     return_state=True)  # fmt: skip
    summary, flow_run_id = state.result(), state.state_details.flow_run_id
    out = tmp_path / "out" / "generated"
    assert sorted(p.name for p in out.iterdir()) == ["part-0.parquet", "part-1.parquet"]  # no temp files left
    table = pq.read_table(out / "part-0.parquet")
    assert table.column_names == ["id", "prompt", "label", "score", *GENERATED.names]
    assert table.schema.field("score").type == pa.int64()  # carried through unchanged
    row = table.to_pylist()[1]
    assert row["id"] == "p0-1" and row["score"] == 1 and row["label"] == "safe"
    # deliberation_end "all": agent1's confirmation is logged, the loop ends once agent2 has confirmed too
    assert row["stop_reason"] == "complete" and row["rounds"] == 2
    assert [(t["agent"], t["focus"]) for t in row["deliberation_log"]] == [
        ("agent1", "policy_coverage"), ("agent2", "helpfulness"),
    ]  # fmt: skip
    assert row["deliberation_log"][1]["cot"] == row["cot"] and row["intents"][0]["source"] == "explicit"
    assert row["cot"] == ["The request is benign.", "Policy respect_helpfulness applies."]
    assert row["models"] == {"intent": "test-model", "drafter": "test-model", "agents": ["test-model"] * 2}
    assert row["policy_set"].startswith("sha256:")
    assert row["usage"]["deliberation"] == {"calls": 2, "input_tokens": 200, "output_tokens": 40}
    assert len(server.requests) == 6 * 4  # 6 rows x (intent, draft, two deliberation turns)
    written = json.loads((tmp_path / "out" / "summary" / "generate.json").read_text())
    assert written["rows_ok"] == 6 and written["rows_failed"] == 0 and written["llm_calls"] == 24
    assert written["input_tokens"] == 24 * 100 and written["output_tokens"] == 24 * 20
    assert summary.rows_ok == 6
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 2 and all(a.data == 100.0 for a in progress)  # one per partition, finished
    table = next(a for a in artifacts if a.key == "aidsafe-generate-summary")
    assert "rows: 6 ok, 0 failed" in (table.description or "")


def deliberation_never_valid_for(prompt_marker: str) -> Callable[[Request], Reply]:
    def script(request: Request) -> Reply:
        if request.tool == "Verdict" and prompt_marker in request.text:
            return Reply({"complete": False, "feedback": "no revision given"})
        return default_script(request)

    return script


def test_every_row_reaches_output_or_failures(tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]) -> None:
    server = fake_openai(deliberation_never_valid_for("POISON"))
    data = [*rows("a", 3), {"id": "a-1", "prompt": "dup", "label": "x", "score": 0},
            {"id": "b", "prompt": "   ", "label": "x", "score": 0},
            {"id": "c", "prompt": "POISON prompt", "label": "x", "score": 0}]  # fmt: skip
    write_partition(tmp_path / "in" / "p.parquet", data, SCHEMA)
    write_partition(
        tmp_path / "in" / "q.parquet", [{"id": "a-0", "prompt": "again", "label": "", "score": 1}], SCHEMA
    )
    summary = run(server, tmp_path / "in", tmp_path / "out", max_failed_fraction=1.0)
    done = pq.read_table(tmp_path / "out" / "generated").column("id").to_pylist()
    failures = pq.read_table(tmp_path / "out" / "failures").to_pylist()
    assert sorted(done) == ["a-0", "a-1", "a-2"]
    by_row = {(f["partition"], f["row"]): f for f in failures}
    assert by_row[("p", 3)]["stage"] == "input" and "duplicate id 'a-1'" in by_row[("p", 3)]["message"]
    assert by_row[("p", 4)]["stage"] == "input" and "whitespace" in by_row[("p", 4)]["message"]
    assert (
        by_row[("p", 5)]["stage"] == "deliberation"
        and by_row[("p", 5)]["error_type"] == "StructuredOutputError"
    )
    assert by_row[("q", 0)]["stage"] == "input" and "earlier partition" in by_row[("q", 0)]["message"]
    assert len(done) + len(failures) == len(data) + 1
    assert summary.rows_failed == 4


def test_rerun_skips_unchanged_partitions_and_redoes_changed_ones(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    source, out = make_input(tmp_path / "in"), tmp_path / "out"
    run(server, source, out)
    first = len(server.requests)
    (source / "part-0.parquet").touch()  # new mtime, same content
    summary = run(server, source, out)
    assert len(server.requests) == first
    assert [p.status for p in summary.partitions] == ["skipped", "skipped"]
    assert summary.rows_ok == 6
    changed = rows("p1", 4)  # same path, new content: one row edited, one added, two as they were
    changed[0]["prompt"] = "How do I stop process 0?"
    write_partition(source / "part-1.parquet", changed, SCHEMA)
    summary = run(server, source, out)
    assert [p.status for p in summary.partitions] == ["skipped", "done"]
    redone = server.requests[first:]
    assert len(redone) == 2 * 4 and all("stop process 0" in r.text or "process 3" in r.text for r in redone)
    table = pq.read_table(out / "generated" / "part-1.parquet")
    assert table.column("id").to_pylist() == ["p1-0", "p1-1", "p1-2", "p1-3"]
    assert table.column("prompt").to_pylist()[0] == "How do I stop process 0?"


def test_changed_policies_or_budget_redo_everything(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    source, out = make_input(tmp_path / "in", partitions=1), tmp_path / "out"
    run(server, source, out)
    policies = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICIES, policies)
    text = (policies / "03_physical_harm.toml").read_text()
    (policies / "03_physical_harm.toml").write_text(text.replace("Physical harm", "Physical harm and injury"))
    before = pq.read_table(out / "generated").to_pylist()
    sent = len(server.requests)
    summary = run(server, source, out, policies=policies)
    after = pq.read_table(out / "generated").to_pylist()
    new_hash = load_policies(policies).hash
    assert (
        summary.partitions[0].status == "done"
        and summary.rows_ok == 3
        and new_hash != before[0]["policy_set"]
    )
    assert len(server.requests) - sent == 3 * 4  # every row sent again: intent, draft, one turn per agent
    assert all("Physical harm and injury" in r.system for r in server.requests[sent:])
    assert [r["policy_set"] for r in after] == [new_hash] * 3
    assert all(a["created_at"] > b["created_at"] for a, b in zip(after, before, strict=True))
    sent = len(server.requests)
    assert run(server, source, out, policies=policies, max_rounds=2).partitions[0].status == "done"
    assert len(server.requests) - sent == 3 * 4


def test_a_bad_partition_fails_the_run_but_not_the_others(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    source = make_input(tmp_path / "in", partitions=1)
    (source / "broken.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(PartitionsFailed, match=r"broken .*broken\.parquet"):
        run(server, source, tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "generated" / "part-0.parquet").num_rows == 3
    failure = pq.read_table(tmp_path / "out" / "failures" / "generate" / "broken.parquet").to_pylist()[0]
    assert failure["stage"] == "input" and "broken.parquet" in failure["message"] and failure["id"] is None
    summary = json.loads((tmp_path / "out" / "summary" / "generate.json").read_text())
    assert [p["status"] for p in summary["partitions"]] == ["failed", "done"]


def test_cli_reports_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the flow run's own log
    assert last.startswith("aidsafe: error: ") and last.endswith("missing: input not found")


def test_cli_prints_where_the_output_is(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    server = fake_openai()
    source = make_input(tmp_path / "in", partitions=1, per=1)
    code = main(["generate", "--input", str(source), "--output", str(tmp_path / "o"),
                 "--base-url", server.base_url, "--model", "m", "--max-rounds", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "rows: 1 ok, 0 failed; per row: 4.0 LLM calls, 400 input + 80 output" in printed
    assert f"summary:  {tmp_path / 'o' / 'summary' / 'generate.json'}" in printed


def test_cli_shows_rows_done_per_stage_on_stderr(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], capsys: pytest.CaptureFixture[str]
) -> None:
    server = fake_openai()
    source = make_input(tmp_path / "in", partitions=2, per=3)
    argv = ["generate", "--input", str(source), "--output", str(tmp_path / "o"),
            "--base-url", server.base_url, "--model", "m", "--max-rounds", "1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err  # not a terminal here: the bar is printed once, with its final counts
    assert re.search(r"generate .* 6/6 rows", err), err
    assert main(argv) == 0  # a rerun skips both partitions: no rows to do, no bar
    assert "rows" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "missing", "made_by"),
    [
        ("refine", "generated", "generate"),
        ("grade", "refined", "refine"),
        ("report", "graded", "grade"),
        ("dpo", "kept", "report"),
    ],
)
def test_a_stage_before_its_input_exists_says_what_to_run_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, missing: str, made_by: str
) -> None:
    assert main([command, "--output", str(tmp_path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    expected = f"{tmp_path / missing}: not found; run `aidsafe {made_by}` before `aidsafe {command}`"
    assert last == f"aidsafe: error: {expected}"


def test_a_bug_fails_its_partition_loudly_and_the_rerun_redoes_it(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def buggy(row: RowRef, ctx: RowContext) -> dict[str, Any]:
        raise KeyError("a bug in the stage")

    server = fake_openai()
    source, out = make_input(tmp_path / "in", partitions=1), tmp_path / "out"
    broken = dataclasses.replace(GENERATE, process=buggy)
    monkeypatch.setattr(aidsafe.pipeline, "PIPELINE", (broken, *aidsafe.pipeline.PIPELINE[1:]))
    with pytest.raises(PartitionsFailed, match="KeyError"):
        run(server, source, out)
    summary = json.loads((out / "summary" / "generate.json").read_text())
    assert [p["status"] for p in summary["partitions"]] == ["failed"]
    assert "a bug" in summary["partitions"][0]["error"]
    assert not (out / "generated" / "part-0.parquet").exists()
    assert not (out / "failures" / "generate").exists()  # not a row failure: no row is blamed
    monkeypatch.undo()
    assert run(server, source, out).partitions[0].status == "done"  # not marked done: redone
