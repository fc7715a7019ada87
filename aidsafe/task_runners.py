"""Where a stage's partition tasks run: the Prefect task runner its settings ask for (`task_runner`).

threads (the default) runs them in this process, `workers` partitions at once. dask and ray run each
partition task in a worker process of a cluster: the one at `scheduler_address`, or a local one started for
the stage with `workers` worker processes (one partition at a time each). A task needs nothing of the
launching process: its PartitionJob and PromptSet travel as data, and it reads and writes only the input and
output paths, which must be on storage every worker sees (and aidsafe must be installed on every worker).
The packages (the `distributed` extra) are imported only when chosen, so a threads run never needs them.

The embedded model is a llama.cpp server of the launching process on 127.0.0.1, out of a cluster's reach,
so a distributed run needs an endpoint URL for every role: that is checked before anything starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, TypeVar, cast

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from aidsafe.config import Settings
from aidsafe.errors import ConfigError

EXTRA = "pip install 'aidsafe[distributed]' (scripts/setup.sh installs it)"
PACKAGES = {"dask": "prefect-dask", "ray": "prefect-ray"}
T = TypeVar("T")


def check_distributable(settings: Settings) -> None:
    """Raise ConfigError when a dask or ray run would send a role to the embedded model."""
    if settings.task_runner == "threads" or not settings.uses_embedded:
        return
    embedded = sorted(name for name, endpoint in settings.roles.items() if endpoint.embedded)
    raise ConfigError(
        f"task_runner {settings.task_runner}: a distributed run needs an endpoint URL: the embedded model is "
        "a local server of this process, which the cluster's workers cannot reach; set OPENAI_BASE_URL, "
        "--base-url, or base_url in the config file ([endpoint] or [roles.NAME]); on the embedded model: "
        + ", ".join(embedded)
    )


def _require(module: str, runner: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"task_runner {runner} needs {PACKAGES[runner]} ({exc}): {EXTRA}") from None


def _dask(settings: Settings) -> TaskRunner[Any]:
    runners = _require("prefect_dask.task_runners", "dask")
    if settings.scheduler_address:
        return runners.DaskTaskRunner(address=settings.scheduler_address)
    # worker processes, not threads: a partition's rows are parsed and validated in Python (the GIL)
    cluster = {"n_workers": settings.workers, "processes": True, "threads_per_worker": 1}
    return runners.DaskTaskRunner(cluster_kwargs=cluster | {"dashboard_address": ":0"})


def _ray(settings: Settings) -> TaskRunner[Any]:
    runners = _require("prefect_ray.task_runners", "ray")
    _require("ray", "ray")
    address = settings.scheduler_address
    if address == "auto":  # RayTaskRunner would start a local instance when none is found: connect or fail
        return runners.RayTaskRunner(init_kwargs={"address": "auto"})
    if address:
        return runners.RayTaskRunner(address=address)
    # a Ray worker process runs one task at a time: `workers` CPUs, `workers` partitions at once
    init = {"num_cpus": settings.workers, "include_dashboard": False}
    return runners.RayTaskRunner(init_kwargs=init)


def partition_runner(settings: Settings, needed: bool = True) -> TaskRunner[Any]:
    """A fresh, unstarted runner for a stage's partition tasks (enter it to start it, exit to stop it).

    needed False (every partition is up to date): threads, so no cluster is started or reached for nothing.
    """
    check_distributable(settings)
    if settings.task_runner == "dask" and needed:
        return _dask(settings)
    if settings.task_runner == "ray" and needed:
        return _ray(settings)
    return ThreadPoolTaskRunner(max_workers=settings.workers)


def task_argument(value: T, settings: Settings) -> T:
    """A task's argument as the runner takes it. Threads: quoted, so that Prefect does not walk every field
    of a job's settings, policies and prompts for futures, per task (it cost more than the task's own
    bookkeeping). Dask takes a quote (a tuple) for a task spec of its own, so the others get the value."""
    quoted: Any = quote(value) if settings.task_runner == "threads" else value
    return cast(T, quoted)
