"""The `run` flow: the whole job, with the stage flows as subflows."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State

from aidsafe.config import Options
from flows.baseline import baseline as baseline_flow
from flows.common import raise_if_failed, retrying
from flows.generate import generate
from flows.grade import grade
from flows.refine import refine
from flows.report import report


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
    """
    retry = retrying(retry)
    states: dict[str, State[Any]] = {"generate": generate(input, output, options, retry, return_state=True)}
    states["refine"] = refine(output, options, retry, return_state=True)
    states["grade"] = grade(output, options, retry, return_state=True)
    if baseline:
        states["baseline"] = baseline_flow(input, output, options, retry, return_state=True)
    states["report"] = report(output, thresholds, return_state=True)
    raise_if_failed(states)
    return str(states["report"].result())
