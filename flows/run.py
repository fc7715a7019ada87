"""The pipeline flows: `run` (the whole job) and `retry` (redo what failed), both driven by PIPELINE.

`run` streams its row stages (flows/chain.py): each partition's refine and grade start as soon as its
generate is done, the baseline alongside, so a long run has finished, graded partitions early; then the
report runs as a subflow. `retry` runs the steps that ran here as subflows in pipeline order (the per-stage
flows of flows/stages.py): it redoes few rows, and any subset of the stages may have run here.
Either way a partly failed step does not stop the next one (its other partitions are carried on), and the
parent flow run ends Failed naming the steps that failed.
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
from flows.chain import stream
from flows.stages import FLOWS, retrying


def _run_step(
    step: Step, output: str, input: str | None, options: Options | None, retry: bool,
    thresholds: dict[str, int] | None,
) -> State[Any]:  # fmt: skip
    if isinstance(step, RowStage):
        source = input if step.reads == INPUT else None
        return FLOWS[step.name](output, source, options, retry, return_state=True)
    return FLOWS[step.name](output, thresholds, return_state=True)


def raise_if_failed(states: dict[str, State[Any]], errors: list[str] | None = None) -> None:
    """Log and raise the steps (subflow runs) that did not complete, after the errors of steps run otherwise
    (each naming its step); the others' work stays."""
    unfinished = {name: state for name, state in states.items() if not state.is_completed()}
    failed = [*(errors or []), *(f"{name}: {state.message}" for name, state in unfinished.items())]
    for error in failed:
        get_run_logger().error("failed: %s", error)
    if failed:
        raise StagesFailed("; ".join(failed))


@flow(name="run")
def run(
    input: str = "data/sample",
    output: str = "out",
    options: Options | None = None,
    baseline: bool = False,
    thresholds: dict[str, int] | None = None,
    retry: bool = False,
) -> str:
    """generate -> refine -> grade (+ baseline) per partition, streamed, then the report; a partly failed
    stage does not stop the next.

    retry: also redo the rows in the failures tables (always done when this flow run is a rerun).
    thresholds: the minimum score per metric of the kept rows (None: the defaults; {}: keep every row).
    """
    retry = retrying(retry)
    steps = run_steps(baseline)
    with output_lock(output):
        errors = stream([s for s in steps if isinstance(s, RowStage)], input, output, options, retry)
        states = {
            s.name: _run_step(s, output, input, options, retry, thresholds)
            for s in steps
            if not isinstance(s, RowStage)
        }
    raise_if_failed(states, errors)
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
