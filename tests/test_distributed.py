"""Partition tasks on a real local Dask cluster and a real local Ray instance (aidsafe.task_runners).

The kill tests SIGKILL the worker process running one partition in the middle of its rows, found by the TCP
connection its model request came from, and check that the cluster ran the partition again in another
process and that every input row ends up exactly once in the output or the failures, with the same row ids
as a run on the threads runner.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cloudpickle
import distributed
import psutil
import pyarrow.parquet as pq
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Options
from aidsafe.errors import ConfigError
from aidsafe.execute import PartitionJob
from aidsafe.pipeline import row_stage
from aidsafe.plan import plan_jobs
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.summary import StageSummary
from aidsafe.task_runners import partition_runner
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI, Reply, Request, default_script

generate = FLOWS["generate"]
pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")
PARTITIONS, ROWS = 4, 6
VICTIM = "part-1"  # the partition whose worker is killed
_peer = threading.local()  # the TCP port of the client whose request this server thread is answering


def make_input(root: Path) -> Path:
    """PARTITIONS partitions of ROWS rows; row 5 of part-2 is POISON: its deliberation always fails."""
    for p in range(PARTITIONS):
        rows = [{"id": f"p{p}-{i}", "prompt": f"part-{p} question {i}: how do I stop a process?"}
                for i in range(ROWS)]  # fmt: skip
        if p == 2:
            rows[5]["prompt"] = "POISON " + rows[5]["prompt"]
        write_partition(root / f"part-{p}.parquet", rows)
    return root


def script(request: Request) -> Reply:
    """The well-behaved backend, except that no review of the POISON row is ever valid (the row fails)."""
    if request.tool == "Verdict" and "POISON" in request.text:
        return Reply({"complete": False, "feedback": "no revision given"})
    return default_script(request)


def sender_pid(peer_port: int, server_port: int) -> int | None:
    """The process holding the client end of a connection to the server (None: gone already)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == peer_port and conn.raddr and conn.raddr.port == server_port:
            return conn.pid
    return None


@dataclass
class Killer:
    """A script that SIGKILLs the process asking for the victim partition's `after`-th row, once."""

    after: int = 3  # rows of the victim already asked for (the earlier ones may be checkpointed)
    port: int = 0
    seen: int = 0
    killed: int | None = None
    killed_name: str = ""  # its process title
    redone_by: int | None = None  # the process that asked for the victim's rows after the kill
    redone_name: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> Reply:
        if f"{VICTIM} question" in request.text and request.tool == "IntentList":
            with self.lock:
                self._intent(request)
        return script(request)

    def _intent(self, request: Request) -> None:
        self.seen += 1
        pid = sender_pid(_peer.port, self.port)
        if self.killed is None and self.seen == self.after:
            assert pid is not None
            self.killed_name = psutil.Process(pid).cmdline()[0]
            os.kill(pid, signal.SIGKILL)
            self.killed = pid
        elif self.killed is not None and self.redone_by is None and pid not in (None, self.killed):
            self.redone_by = pid  # not a request the killed process sent before it died
            self.redone_name = psutil.Process(pid).cmdline()[0]


class PeerServer(FakeOpenAI):
    """The test server, telling its script which client port each request came from (in _peer)."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler()

        class Handler(base):
            def _post(self) -> None:
                _peer.port = self.client_address[1]
                super()._post()

            def handle(self) -> None:
                with contextlib.suppress(ConnectionResetError):  # the killed worker's kept-alive connection
                    super().handle()

        return Handler


@pytest.fixture
def killer() -> Iterator[tuple[Killer, FakeOpenAI]]:
    killing = Killer()
    with PeerServer(killing, latency=0.05) as server:
        killing.port = int(server.base_url.split(":")[2].split("/")[0])
        yield killing, server


def options(server: FakeOpenAI, **extra: Any) -> Options:
    """Small waves of rows (concurrency 2) saved every 2 rows: a kill lands in the middle of a partition."""
    return Options(base_url=server.base_url, model="test-model", concurrency=2, checkpoint_rows=2,
                   partition_retries=0, **extra)  # fmt: skip


def run(server: FakeOpenAI, source: Path, out: Path, **extra: Any) -> StageSummary:
    return generate(input=str(source), output=str(out), options=options(server, **extra))


def ids_written(out: Path) -> list[str]:
    """Every row id in the generate output and its failures tables (a row twice shows up twice)."""
    done = pq.read_table(out / "generated").column("id").to_pylist()
    failures = out / "failures" / "generate"
    failed = pq.read_table(failures).column("id").to_pylist() if any(failures.glob("*.parquet")) else []
    return sorted(done + failed)


def check_nothing_lost_or_duplicated(
    tmp_path: Path, summary: StageSummary, fake: Callable[..., FakeOpenAI]
) -> None:
    expected = sorted(f"p{p}-{i}" for p in range(PARTITIONS) for i in range(ROWS))
    assert ids_written(tmp_path / "out") == expected  # each input row once: not lost, not duplicated
    assert [p.status for p in summary.partitions] == ["done"] * PARTITIONS
    assert summary.rows_ok == len(expected) - 1 and summary.rows_failed == 1  # the POISON row
    failures = pq.read_table(tmp_path / "out" / "failures" / "generate").to_pylist()
    assert [(f["id"], f["stage"]) for f in failures] == [("p2-5", "deliberation")]
    threads = run(fake(script), tmp_path / "in", tmp_path / "threads")  # the same input, threads runner
    assert (threads.rows_ok, threads.rows_failed) == (summary.rows_ok, summary.rows_failed)
    assert ids_written(tmp_path / "out") == ids_written(tmp_path / "threads")
    listing = sorted(p.name for p in (tmp_path / "out" / "generated").iterdir())
    assert listing == sorted(p.name for p in (tmp_path / "threads" / "generated").iterdir())  # no temp file


def check_redone_elsewhere(killing: Killer) -> None:
    assert killing.killed is not None, "the victim partition never asked for its row: nothing was killed"
    assert killing.killed != os.getpid()
    assert not psutil.pid_exists(killing.killed) or psutil.Process(killing.killed).status() == "zombie"
    assert killing.redone_by is not None, "the killed partition was not run again"
    assert killing.redone_by not in (killing.killed, os.getpid())


def check_rerun_and_retry(server: FakeOpenAI, tmp_path: Path, **runner: Any) -> None:
    """A rerun skips every partition; a retry redoes only the failed row, which stays in failures once."""
    before = len(server.requests)
    again = run(server, tmp_path / "in", tmp_path / "out", **runner)
    assert [p.status for p in again.partitions] == ["skipped"] * PARTITIONS and len(server.requests) == before
    options_ = options(server, **runner)
    retried = generate(input=str(tmp_path / "in"), output=str(tmp_path / "out"), options=options_, retry=True)
    assert [p.status for p in retried.partitions] == ["skipped", "skipped", "done", "skipped"]
    assert all("POISON" in r.text for r in server.requests[before:])  # nothing else asked again
    assert ids_written(tmp_path / "out") == ids_written(tmp_path / "threads")


@pytest.fixture
def dask_cluster() -> Iterator[distributed.LocalCluster]:
    """2 worker processes of one thread each, with a nanny that restarts a killed worker."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
                                  worker_dashboard_address=None) as cluster:  # fmt: skip
        yield cluster


def test_dask_worker_killed_mid_partition_is_redone_elsewhere_nothing_lost_or_duplicated(
    tmp_path: Path, killer: tuple[Killer, FakeOpenAI], dask_cluster: distributed.LocalCluster,
    fake_openai: Callable[..., FakeOpenAI],
) -> None:  # fmt: skip
    killing, server = killer
    with distributed.Client(dask_cluster) as client:
        workers = set(client.run(os.getpid).values())
        summary = run(server, make_input(tmp_path / "in"), tmp_path / "out", task_runner="dask",
                      scheduler_address=dask_cluster.scheduler_address)  # fmt: skip
        workers |= set(client.run(os.getpid).values())  # with the one the nanny started instead
    assert killing.killed in workers and killing.redone_by in workers  # worker processes, not this one
    check_redone_elsewhere(killing)
    check_nothing_lost_or_duplicated(tmp_path, summary, fake_openai)
    check_rerun_and_retry(
        server, tmp_path, task_runner="dask", scheduler_address=dask_cluster.scheduler_address
    )


def test_ray_worker_killed_mid_partition_is_redone_elsewhere_nothing_lost_or_duplicated(
    tmp_path: Path, killer: tuple[Killer, FakeOpenAI], fake_openai: Callable[..., FakeOpenAI]
) -> None:
    killing, server = killer
    # no scheduler_address: the runner starts a local Ray instance with `workers` CPUs, stopped at the end
    summary = run(server, make_input(tmp_path / "in"), tmp_path / "out", task_runner="ray", workers=2)
    assert killing.killed_name == killing.redone_name == "ray::partition"  # Ray worker processes
    check_redone_elsewhere(killing)
    check_nothing_lost_or_duplicated(tmp_path, summary, fake_openai)


@pytest.mark.parametrize("runner", ["dask", "ray"])
@pytest.mark.parametrize("config", ["", "[roles.intent]\nbase_url = 'http://127.0.0.1:9/v1'\nmodel = 'm'\n"])
def test_distributed_run_with_an_embedded_role_fails_early_asking_for_an_endpoint_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: str, config: str
) -> None:
    def no_server(*args: object) -> None:
        raise AssertionError("the embedded server was started")

    monkeypatch.setattr("aidsafe.embedded.embedded_server", no_server)
    file = tmp_path / "aidsafe.toml"
    file.write_text(config)
    with pytest.raises(ConfigError, match="a distributed run needs an endpoint URL") as raised:
        generate(input=str(make_input(tmp_path / "in")), output=str(tmp_path / "out"),
                 options=Options(task_runner=runner, config=file))  # fmt: skip
    message = str(raised.value)
    assert f"task_runner {runner}" in message
    assert all(way in message for way in ("OPENAI_BASE_URL", "--base-url", "base_url"))
    assert "drafter" in message and ("intent" in message) == (not config)  # the roles still embedded
    assert not (tmp_path / "out" / "generated").exists()


def contents(prompts: PromptSet) -> list[Any]:
    """A prompt set's values (a string.Template compares by identity: its template text instead)."""
    stages = {name: {**vars(s), "user": s.user.template} for name, s in prompts.stages.items()}
    return [prompts.hash, stages, prompts.tools, prompts.fragments, prompts.focus, prompts.directory]


def test_jobs_and_prompts_travel_as_data(tmp_path: Path, policy_set: PolicySet, prompts: PromptSet) -> None:
    """What a partition task gets survives pickle and cloudpickle (how Dask and Ray send it) unchanged."""
    settings = Options(base_url="http://127.0.0.1:9/v1", model="m", task_runner="dask").load(env={})
    stage = row_stage("generate")
    jobs = plan_jobs(stage, sorted(make_input(tmp_path / "in").glob("*.parquet")), tmp_path / "out",
                     settings, policy_set, prompts, False)  # fmt: skip
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert [loads(dumps(job)) for job in jobs] == jobs
        assert contents(loads(dumps(prompts))) == contents(prompts)
    assert isinstance(jobs[0], PartitionJob) and jobs[0].settings.roles["intent"].api_key.get_secret_value()


def test_runner_is_built_from_the_settings() -> None:
    def runner(**values: Any) -> Any:
        return partition_runner(Options(base_url="http://h/v1", model="m", **values).load(env={}))

    threads = runner(workers=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = runner(task_runner="dask", workers=2)
    assert local.address is None and local.cluster_kwargs["n_workers"] == 2
    assert runner(task_runner="dask", scheduler_address="tcp://h:8786").address == "tcp://h:8786"
    assert runner(task_runner="ray", workers=2).init_kwargs["num_cpus"] == 2
    assert runner(task_runner="ray", scheduler_address="ray://h:10001").address == "ray://h:10001"
    assert runner(task_runner="ray", scheduler_address="auto").init_kwargs["address"] == "auto"
    settings = Options(base_url="http://h/v1", model="m", task_runner="dask").load(env={})
    assert isinstance(partition_runner(settings, needed=False), ThreadPoolTaskRunner)  # nothing to run


@pytest.mark.parametrize(("runner", "module"), [("dask", "prefect_dask"), ("ray", "prefect_ray")])
def test_missing_package_names_the_distributed_extra(
    monkeypatch: pytest.MonkeyPatch, runner: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, f"{module}.task_runners", None)  # as if not installed
    settings = Options(base_url="http://h/v1", model="m", task_runner=runner).load(env={})
    with pytest.raises(ConfigError, match=rf"task_runner {runner} needs .*aidsafe\[distributed\]"):
        partition_runner(settings)
