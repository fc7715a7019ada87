"""Planning a row stage over an input: one job per partition, with the fingerprint that decides a skip."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from aidsafe.config import Settings
from aidsafe.errors import InputError
from aidsafe.execute import PartitionJob, fingerprint, stage_key
from aidsafe.partitions import earlier_ids, fingerprint_file
from aidsafe.policies import PolicySet
from aidsafe.prompts import PromptSet
from aidsafe.stage import RowStage


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
    jobs = [
        PartitionJob(
            stage=stage.name,
            input_path=path,
            output_dir=output_dir,
            settings=settings,
            policies=policies,
            stage_key=key,
            fingerprint=fingerprint(key, fingerprint_file(path)),
            taken_ids=taken[path],
        )
        for path in paths
    ]
    return [job.model_copy(update={"force": has_retryable_failures(job)}) if retry else job for job in jobs]


def has_retryable_failures(job: PartitionJob) -> bool:
    """Rows that failed in the model calls (not bad input, which needs the input fixed) can be retried."""
    if not job.failures_path.exists():
        return False
    failures = pq.read_table(job.failures_path, columns=["id", "stage"]).to_pylist()
    return any(f["id"] is not None and f["stage"] != "input" for f in failures)
