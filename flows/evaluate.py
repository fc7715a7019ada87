"""The `eval` flow: every target answers the evaluation sets (a subflow each: the eval stage, one task per
set partition, as every row stage), then the eval report compares them (Markdown, PNG, Prefect artifacts)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from aidsafe.config import Endpoint, Options, Settings
from aidsafe.eval_files import render, write_report
from aidsafe.eval_report import comparison_rows, load_target
from aidsafe.evaluation import DEFAULT_SETS, check_overlap, prepare_sets
from aidsafe.lock import output_lock
from aidsafe.stages.eval import EVAL
from aidsafe.summary import StageSummary
from aidsafe.targets import parse_targets, target_endpoint
from flows.run import raise_if_failed
from flows.stages import retrying, run_stage


def with_target(settings: Settings, endpoint: Endpoint) -> Settings:
    return settings.model_copy(update={"roles": {**settings.roles, "target": endpoint}})


@flow(name="eval-target", flow_run_name="eval-{name}", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def eval_target(name: str, sets: str, output: str, settings: Settings, retry: bool) -> StageSummary:
    """One target over every set partition, into OUTPUT/<name>/ (eval/, failures/eval/, summary/)."""
    return run_stage(EVAL, sets, str(Path(output) / name), None, retry, settings=settings)


def publish(path: Path, rows: list[dict[str, str]], markdown: str) -> None:
    create_markdown_artifact(key="aidsafe-eval", markdown=markdown, description="aidsafe eval")
    create_table_artifact(key="aidsafe-eval-table", table=rows, description="aidsafe eval")
    get_run_logger().info("eval report: %s", path)


@flow(name="eval")
def evaluate(
    output: str = "out/eval",
    targets: list[str] | None = None,
    sets: str = str(DEFAULT_SETS),
    options: Options | None = None,
    limit: int | None = None,
    retry: bool = False,
    allow_overlap: bool = False,
    run: str | None = None,
) -> str:
    """Evaluate each target (NAME=SPEC, aidsafe.targets; none: the embedded model as `base`) on the sets.

    limit: the first N rows of each set; run: the aidsafe run of the training data (its grader means)."""
    settings, parsed, out = (options or Options()).load(), parse_targets(targets or []), Path(output)
    with output_lock(output):
        endpoints = {t.name: target_endpoint(t, settings) for t in parsed}
        local = {name: path for name, e in endpoints.items() if (path := e.local_path) is not None}
        inputs = prepare_sets(Path(sets), out, limit)
        overlaps = check_overlap(local, inputs, allow_overlap)
        states = {
            name: eval_target(
                name, str(inputs), output, with_target(settings, endpoint), retrying(retry), return_state=True
            )
            for name, endpoint in endpoints.items()
        }
        results = [load_target(out, name) for name in endpoints]
        path = write_report(results, out, overlaps, Path(run) if run else None)
    publish(path, comparison_rows(results), render(results, overlaps, Path(run) if run else None))
    raise_if_failed(states)
    return str(path)
