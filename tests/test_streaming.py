"""The streaming `run` (flows/chain.py): a partition's refine and grade start once its generate is done,
through a real Prefect API and real HTTP to the scripted test server."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import flows.chain
from aidsafe.config import Options, Settings
from aidsafe.errors import StagesFailed
from flows.run import run
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script
from tests.test_crash import start, wait_for

pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")
SLOW = "Zanzibar"  # in partition b's prompts only
ROW_STAGES = {"generate": "generated", "refine": "refined", "grade": "graded", "baseline": "baseline"}


def make_input(root: Path) -> Path:
    """part-a (with a whitespace prompt, a row that fails as bad input) and part-b."""
    part_a = [{"id": "a1", "prompt": "How do I sort a list?"}, {"id": "a2", "prompt": "   "}]
    write_partition(root / "part-a.parquet", part_a)
    write_partition(root / "part-b.parquet", [{"id": "b1", "prompt": f"Where is {SLOW}?"}])
    return root


def options(server: FakeOpenAI, **extra: Any) -> Options:
    return Options(base_url=server.base_url, model="m", max_rounds=2, max_failed_fraction=1.0, **extra)


def rows(out: Path, directory: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every partition file's rows by id, without the time stamps (*_at), which differ between runs."""
    return {
        path.name: {row["id"]: {k: v for k, v in row.items() if not k.endswith("_at")}
                    for row in pq.read_table(path).to_pylist()}
        for path in sorted((out / directory).glob("*.parquet"))
    }  # fmt: skip


def summary(out: Path, stage: str) -> dict[str, Any]:
    return dict(json.loads((out / "summary" / f"{stage}.json").read_text()))


def statuses(out: Path, stage: str) -> dict[str, tuple[str, str | None]]:
    return {p["partition"]: (p["status"], p["error"]) for p in summary(out, stage)["partitions"]}


def slow_for_b(request: Request) -> Reply:
    """Partition b's generate is slow: its first call takes 2.5 s."""
    if SLOW in request.text and request.tool == "IntentList":
        time.sleep(2.5)
    return default_script(request)


def test_a_partition_is_graded_before_a_slow_partition_is_generated(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(slow_for_b)
    out = tmp_path / "out"
    run(str(make_input(tmp_path / "in")), str(out), options(server), thresholds={})
    graded_a = (out / "graded" / "part-a.parquet").stat().st_mtime
    assert graded_a < (out / "generated" / "part-b.parquet").stat().st_mtime  # a stage barrier: after
    order = [(r.tool, SLOW in r.text) for r in server.requests]
    assert order.index(("Grades", False)) < order.index(("Draft", True))  # a graded before b drafted


def test_the_streamed_run_makes_what_the_stage_flows_make(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    source, streamed, staged = make_input(tmp_path / "in"), tmp_path / "streamed", tmp_path / "staged"
    run(str(source), str(streamed), options(server), baseline=True, thresholds={})
    for stage in ROW_STAGES:
        FLOWS[stage](str(staged), str(source) if stage in ("generate", "baseline") else None, options(server))
    FLOWS["report"](str(staged), {})
    for directory in [*ROW_STAGES.values(), "kept", "failures/generate"]:
        assert rows(streamed, directory) == rows(staged, directory), directory
        assert rows(streamed, directory), directory  # not vacuous
    for directory in ROW_STAGES.values():
        for path in (streamed / directory).glob("*.parquet"):
            assert pq.read_schema(path) == pq.read_schema(staged / directory / path.name), path
    counted = ("rows_ok", "rows_failed", "llm_calls", "input_tokens", "output_tokens")
    for stage in ROW_STAGES:
        totals = [{k: summary(out, stage)[k] for k in counted} for out in (streamed, staged)]
        assert totals[0] == totals[1] and totals[0]["rows_ok"] == 2, stage
        assert statuses(streamed, stage) == statuses(staged, stage) == {"part-a": ("done", None),
                                                                       "part-b": ("done", None)}  # fmt: skip
    assert rows(streamed, "kept")["part-a.parquet"].keys() == {"a1"}


def test_a_failed_partition_fails_its_later_stages_and_the_others_finish(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    """part-b's backend is down (503: transient, so its task is retried once), zz-broken is not Parquet."""
    server = fake_openai(faults=lambda request, number: "503" if SLOW in request.text else None)
    source, out = make_input(tmp_path / "in"), tmp_path / "out"
    (source / "zz-broken.parquet").write_bytes(b"not parquet")
    flaky = options(server, max_retries=0, partition_retries=1, partition_retry_delay=0)
    with pytest.raises(StagesFailed) as raised:
        run(str(source), str(out), flaky, baseline=True, thresholds={})
    upstream = "part-b (upstream generate failed), zz-broken (upstream generate failed)"
    assert f"refine: 2 partition(s) failed: {upstream}" in str(raised.value)
    assert f"grade: 2 partition(s) failed: {upstream}" in str(raised.value)
    assert "generate: 2 partition(s) failed: part-b (" in str(raised.value)
    failed = ("failed", "upstream generate failed")
    assert statuses(out, "grade") == {"part-a": ("done", None), "part-b": failed, "zz-broken": failed}
    assert statuses(out, "generate")["part-b"][0] == "failed"
    assert statuses(out, "baseline")["part-a"] == ("done", None)  # the baseline is not downstream of generate
    for directory in ("refined", "graded"):
        assert list(rows(out, directory)) == ["part-a.parquet"], directory
    tools_for_b = Counter(r.tool for r in server.requests if SLOW in r.text)
    assert tools_for_b == {"IntentList": 2, "Draft": 2}  # generate (tried twice) and baseline, tried twice
    assert (out / "report" / "report.md").exists()  # the report still runs, on what finished


@pytest.fixture
def server_starts(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each run asked for the embedded server to be started (the `needed` of live_settings)."""
    asked: list[bool] = []
    real = flows.chain.live_settings

    def spy(settings: Settings, log: Path, needed: bool = True) -> AbstractContextManager[Settings]:
        asked.append(needed)
        return real(settings, log, needed)

    monkeypatch.setattr(flows.chain, "live_settings", spy)
    return asked


def test_a_rerun_of_a_finished_run_skips_everything_without_a_call(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], server_starts: list[bool]
) -> None:
    server = fake_openai()
    source, out = make_input(tmp_path / "in"), tmp_path / "out"
    run(str(source), str(out), options(server), baseline=True, thresholds={})
    sent, before = len(server.requests), rows(out, "graded")
    run(str(source), str(out), options(server), baseline=True, thresholds={})
    assert len(server.requests) == sent and sent > 0
    assert server_starts == [True, False]  # the rerun would not even start the embedded server
    for stage in ROW_STAGES:
        assert {status for status, _ in statuses(out, stage).values()} == {"skipped"}, stage
    assert rows(out, "graded") == before


def test_task_runs_are_named_by_stage_and_partition_and_linked_to_what_they_read(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    state = run(str(make_input(tmp_path / "in")), str(tmp_path / "out"), options(server), thresholds={},
                return_state=True)  # fmt: skip
    with get_client(sync_client=True) as client:
        found = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        task_runs = {t.name: t for t in client.read_task_runs(flow_run_filter=found)}
    expected = {f"{stage}-part-{p}" for stage in ("generate", "refine", "grade") for p in "ab"}
    assert {name for name in task_runs if "-part-" in name} == expected  # besides the report subflow's
    for stage, reads in (("refine", "generate"), ("grade", "refine")):
        for p in "ab":
            upstream = {i.id for i in task_runs[f"{stage}-part-{p}"].task_inputs["wait_for"]}  # type: ignore[union-attr]
            assert upstream == {task_runs[f"{reads}-part-{p}"].id}


def graded(out: Path) -> dict[str, float]:
    directory = out / "graded"
    return {p.name: p.stat().st_mtime for p in directory.glob("*.parquet")} if directory.is_dir() else {}


def test_ctrl_c_keeps_the_graded_partitions_and_the_rerun_skips_them(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai(latency=0.1)
    source, out = tmp_path / "in", tmp_path / "out"
    for p in range(6):
        questions = [{"id": f"p{p}-{i}", "prompt": f"Q{i}?"} for i in range(2)]
        write_partition(source / f"part-{p}.parquet", questions)
    process = start(source, out, server, "run", workers=2)
    wait_for(process, lambda: bool(graded(out)))
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130
    kept = graded(out)
    assert 0 < len(kept) < 6  # streamed: some partitions were graded before every one was generated
    assert start(source, out, server, "run", workers=2).wait(timeout=300) == 0
    after = graded(out)
    assert len(after) == 6 and all(after[name] == mtime for name, mtime in kept.items())
