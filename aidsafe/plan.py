"""Planning a row stage over an input: one job per partition, with the fingerprint that decides a skip."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection
from pathlib import Path

import pyarrow.parquet as pq

from aidsafe.config import Settings
from aidsafe.errors import InputError
from aidsafe.execute import PartitionJob, fingerprint, stage_key
from aidsafe.partitions import earlier_ids, fingerprint_file, stored_fingerprint
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stage import RowStage
from aidsafe.summary import partition_files


def plan_jobs(
    stage: RowStage,
    paths: list[Path],
    output_dir: Path,
    settings: Settings,
    policies: PolicySet,
    prompts: PromptSet,
    retry: bool = False,
) -> list[PartitionJob]:
    """One job per partition, with the fingerprint that decides whether it can be skipped.

    retry: also rerun up-to-date partitions that have rows in the failures table (only those rows are redone).
    """
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise InputError(str(output_dir), f"two input partitions share a file name: {sorted(names)}")
    taken = earlier_ids(paths)
    key = stage_key(stage, settings, policies, prompts)
    jobs = [new_job(stage, path, output_dir, settings, policies, key, taken[path]) for path in paths]
    adopt_renamed(stage, jobs)
    return [job.model_copy(update={"force": has_retryable_failures(job)}) if retry else job for job in jobs]


def new_job(
    stage: RowStage, path: Path, output_dir: Path, settings: Settings, policies: PolicySet, key: str,
    taken: frozenset[str] = frozenset(),
) -> PartitionJob:  # fmt: skip
    """A partition's job, fingerprinted by its stage key and its input file's content as it is now."""
    return PartitionJob(
        stage=stage.name, input_path=path, output_dir=output_dir, settings=settings, policies=policies,
        stage_key=key, fingerprint=fingerprint(key, fingerprint_file(path)), taken_ids=taken,
    )  # fmt: skip


_ADOPTING = threading.Lock()  # plan_job runs in several tasks at once; adopt_renamed renames files


def plan_job(
    stage: RowStage, path: Path, output_dir: Path, settings: Settings, policies: PolicySet, key: str,
    retry: bool = False, current: Collection[str] = (),
) -> PartitionJob:  # fmt: skip
    """One partition's job, planned alone: the streaming run (flows/chain.py) plans a stage that reads an
    earlier stage's output once that partition's input is written, since the fingerprint hashes it.

    As plan_jobs for that partition (stages reading the user's input need plan_jobs: their ids are checked
    across partitions). key: stage_key(); current: every partition of the run, whose outputs are not taken
    for a renamed one's."""
    job = new_job(stage, path, output_dir, settings, policies, key)
    with _ADOPTING:
        adopt_renamed(stage, [job], current)
    return job.model_copy(update={"force": has_retryable_failures(job)}) if retry else job


def adopt_renamed(stage: RowStage, jobs: list[PartitionJob], others: Collection[str] = ()) -> list[str]:
    """Find a partition's finished work by content, not by name: an output (and its failures) whose
    fingerprint is a job's, but that belongs to no current partition, is renamed to that job's partition
    (a renamed input file is not paid for twice, nor written twice). Returns the renames made.

    others: the current partitions besides the jobs' own (when the jobs are planned one at a time)."""
    if not jobs:
        return []
    directory = jobs[0].output_dir / stage.output
    current = {job.name for job in jobs} | set(others)
    stamped = ((stored_fingerprint(p), p) for p in partition_files(directory) if p.stem not in current)
    orphans = {fingerprint: path for fingerprint, path in stamped if fingerprint}
    renamed = []
    for job in jobs:
        found = orphans.pop(job.fingerprint, None)
        if found is None or job.output_path(stage).exists():
            continue
        os.replace(found, job.output_path(stage))
        old_failures = job.failures_path.with_name(found.name)
        if old_failures.exists():
            os.replace(old_failures, job.failures_path)
        renamed.append(f"{found.stem} -> {job.name}")
    return renamed


def has_retryable_failures(job: PartitionJob) -> bool:
    """Rows that failed in the model calls (not bad input, which needs the input fixed) can be retried."""
    if not job.failures_path.exists():
        return False
    failures = pq.read_table(job.failures_path, columns=["id", "stage"]).to_pylist()
    return any(f["id"] is not None and f["stage"] != "input" for f in failures)
