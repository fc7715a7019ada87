"""The `retry` flow: redo the rows in the failures tables, and what depends on them; finished rows stay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import State

from aidsafe.config import Options
from aidsafe.errors import AidsafeError
from aidsafe.report_files import stored_thresholds
from flows.baseline import baseline
from flows.common import raise_if_failed
from flows.dpo import dpo
from flows.generate import generate
from flows.grade import grade
from flows.refine import refine
from flows.report import report


def recorded_sources(output: Path) -> dict[str, str]:
    """The stages that ran on this output directory, with their input."""
    found = {p.stem: json.loads(p.read_text())["source"] for p in (output / "summary").glob("*.json")}
    if not found:
        raise AidsafeError(f"{output}: no run recorded here (no summary/); nothing to retry")
    return found


@flow(name="retry")
def retry(output: str = "out", options: Options | None = None) -> str:
    """Rerun only the failed rows of every stage (and the rows that depend on them), then the report."""
    sources = recorded_sources(Path(output))
    states: dict[str, State[Any]] = {}
    if "generate" in sources:
        states["generate"] = generate(sources["generate"], output, options, retry=True, return_state=True)
    for name, stage_flow in (("refine", refine), ("grade", grade)):
        if name in sources:
            states[name] = stage_flow(output, options, retry=True, return_state=True)
    if "baseline" in sources:
        states["baseline"] = baseline(sources["baseline"], output, options, retry=True, return_state=True)
    if "grade" in sources:
        states["report"] = report(output, stored_thresholds(Path(output)), return_state=True)
    if "dpo" in sources:
        states["dpo"] = dpo(output, options, retry=True, return_state=True)
    raise_if_failed(states)
    return ", ".join(states)
