"""The pipeline flows: `run` (the whole job) and `retry` (redo what failed), both driven by PIPELINE.

The steps run as subflows in pipeline order; a partly failed step does not stop the next one (its other
partitions are carried on), and the parent flow run ends Failed naming the steps that failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import State

from aidsafe.config import Options
from aidsafe.errors import AidsafeError, StagesFailed
from aidsafe.lock import output_lock
from aidsafe.pipeline import PIPELINE, run_steps
from aidsafe.report_files import stored_thresholds
from aidsafe.stage import INPUT, RowStage, Step
from flows.stages import FLOWS, retrying


def _run_step(
    step: Step, output: str, input: str | None, options: Options | None, retry: bool,
    thresholds: dict[str, int] | None,
) -> State[Any]:  # fmt: skip
    if isinstance(step, RowStage):
        source = input if step.reads == INPUT else None
        return FLOWS[step.name](output, source, options, retry, return_state=True)
    return FLOWS[step.name](output, thresholds, return_state=True)


def raise_if_failed(states: dict[str, State[Any]]) -> None:
    """Log and raise the steps (subflow runs) that did not complete; the others' work stays."""
    failed = {name: state for name, state in states.items() if not state.is_completed()}
    for name, state in failed.items():
        get_run_logger().error("%s failed: %s", name, state.message)
    if failed:
        raise StagesFailed("; ".join(f"{name}: {state.message}" for name, state in failed.items()))


@flow(name="run")
def run(
    input: str = "data/sample",
    output: str = "out",
    options: Options | None = None,
    baseline: bool = False,
    thresholds: dict[str, int] | None = None,
    retry: bool = False,
) -> str:
    """generate -> refine -> grade (+ baseline) -> report; a partly failed stage does not stop the next.

    retry: also redo the rows in the failures tables (always done when this flow run is a rerun).
    thresholds: the minimum score per metric of the kept rows (None: the defaults; {}: keep every row).
    """
    retry = retrying(retry)
    with output_lock(output):
        states = {
            s.name: _run_step(s, output, input, options, retry, thresholds) for s in run_steps(baseline)
        }
    raise_if_failed(states)
    return str(states["report"].result().path)


def recorded_sources(output: Path) -> dict[str, str]:
    """The row stages that ran on this output directory, with their input."""
    found = {p.stem: json.loads(p.read_text())["source"] for p in (output / "summary").glob("*.json")}
    if not found:
        raise AidsafeError(f"{output}: no run recorded here (no summary/); nothing to retry")
    return found


@flow(name="retry")
def retry(output: str = "out", options: Options | None = None) -> str:
    """Rerun only the failed rows of every stage that ran here (and the rows that depend on them)."""
    sources = recorded_sources(Path(output))
    steps = [s for s in PIPELINE if (s.name if isinstance(s, RowStage) else s.reads) in sources]
    thresholds = stored_thresholds(Path(output))
    with output_lock(output):
        states = {s.name: _run_step(s, output, sources.get(s.name), options, True, thresholds) for s in steps}
    raise_if_failed(states)
    return ", ".join(states)
