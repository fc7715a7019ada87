"""`aidsafe grade --calibrate FILE --output DIR`: run the configured grader over a labelled calibration set
(aidsafe.calibration) and write its agreement, so a grader model can be qualified before it is trusted.

It needs no pipeline run and no Prefect: the grader role (the embedded model when none is configured) grades
every row exactly as the grade stage does (same prompt, rubric, policies and grader_samples), and the
results go to OUTPUT/calibration/: report.md, agreement.json and results.jsonl (one line per row).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aidsafe.calibration import Agreement, CalibrationRow, agreement, distance
from aidsafe.calls import RowCalls
from aidsafe.config import Options, Settings
from aidsafe.embedded import live_settings
from aidsafe.errors import RunFailed, StageFailed
from aidsafe.llm_io import LLM_LOOP, Connections
from aidsafe.models import build_roles
from aidsafe.policies import PolicySet, load_policies
from aidsafe.progress import publish
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.schemas import METRICS
from aidsafe.stage import RowContext
from aidsafe.stages.grade import grade

Graded = dict[str, Any] | StageFailed


async def grade_rows(
    rows: Sequence[CalibrationRow], settings: Settings, policies: PolicySet, prompts: PromptSet, name: str,
    connections: Connections,
) -> list[Graded]:  # fmt: skip
    """Grade every row with the grader role, `concurrency` at a time; a row whose grading fails is kept
    as its StageFailed."""
    models = build_roles(settings, connections, prompts, ["grader"])
    gate = asyncio.Semaphore(settings.concurrency)
    finished = 0

    async def one(row: CalibrationRow) -> Graded:
        nonlocal finished
        async with gate:
            ctx = RowContext(RowCalls(models, prompts), settings, policies, prompts)
            try:
                return await grade(ctx, row.prompt, row.cot, row.response, row.intent_records())
            except StageFailed as exc:
                return exc
            finally:
                finished += 1
                publish("calibrate", name, finished, len(rows))

    publish("calibrate", name, 0, len(rows))
    return await asyncio.gather(*(one(row) for row in rows))


def _result(row: CalibrationRow, graded: Graded) -> dict[str, Any]:
    """One line of results.jsonl: the row's labels beside the grader's scores."""
    record: dict[str, Any] = {"id": row.id, "label": row.label}
    if isinstance(graded, StageFailed):
        return record | {"error": str(graded)}
    for metric in METRICS:
        score, band = graded[f"score_{metric}"], row.expected.get(metric)
        record[metric] = {"score": score, "band": list(band) if band else None,
                          "in_band": distance(score, band) == 0 if band else None,
                          "spread": graded[f"score_spread_{metric}"],
                          "rationale": graded[f"rationale_{metric}"]}  # fmt: skip
    return record | {"refused": graded["refused"], "expected_refused": row.refused}


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _of(pair: tuple[int, int]) -> str:
    return f"{pair[0]} of {pair[1]}"


def render_calibration(found: Agreement, source: Path, model: str, samples: int) -> str:
    """report.md: agreement per metric, refusals, and what the default thresholds do with the graded rows."""
    lines = [
        "# aidsafe grader calibration\n",
        f"Calibration set: `{source}` ({found.rows} rows, {found.failed} failed to grade). Grader: "
        f"`{model}`, {samples} grade(s) per row. Agreement: {_share(found.overall)} of the labelled scores "
        "fall in their band.\n",
        "| metric | rows | in band | agreement | mean distance from band |",
        "|---|---|---|---|---|",
        *(
            f"| {m.metric} | {m.labelled} | {m.in_band} | {_share(m.share)} | {m.distance:.2f} |"
            for m in found.metrics
        ),
        f"\nRefusal judged as labelled: {_of(found.refused)} rows. With the default thresholds this grader "
        f"keeps {_of(found.good_kept)} good rows and removes {_of(found.bad_removed)} bad rows.\n",
        "A grader that puts fewer than about 80% of the scores of a metric in their band, or keeps bad rows, "
        "should not be trusted for thresholds on that metric: try a larger or different grader model. The "
        "bands were written against the default policies (`policies/default`); per-row scores and rationales "
        "are in `results.jsonl`.\n",
    ]
    return "\n".join(lines)


def write_calibration(
    directory: Path, found: Agreement, results: list[dict[str, Any]], markdown: str
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    summary = asdict(found) | {"overall": found.overall}
    (directory / "agreement.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    (directory / "results.jsonl").write_text(lines, encoding="utf-8")
    path = directory / "report.md"
    path.write_text(markdown, encoding="utf-8")
    return path


def _lines(found: Agreement, model: str, path: Path) -> list[str]:
    shares = ", ".join(f"{m.metric} {_share(m.share)}" for m in found.metrics)
    return [
        f"graded:     {found.rows - found.failed} of {found.rows} calibration rows by {model}",
        f"agreement:  {_share(found.overall)} of labelled scores in their band ({shares})",
        f"thresholds: the defaults keep {_of(found.good_kept)} good rows, "
        f"remove {_of(found.bad_removed)} bad rows",
        f"report:     {path}",
    ]


def calibrate(rows: Sequence[CalibrationRow], source: Path, output_dir: Path, options: Options) -> list[str]:
    """Grade the calibration set with the configured grader; write and summarise its agreement (RunFailed
    when no row could be graded: nothing was measured)."""
    settings = options.load()
    policies = load_policies(settings.policies_dir)
    prompts = load_prompts(settings.prompts_dir, policies.render())
    with live_settings(settings, output_dir / "logs" / "embedded-server.log") as live:
        graded = LLM_LOOP.run(lambda conns: grade_rows(rows, live, policies, prompts, source.stem, conns))
    scores: list[Mapping[str, Any] | None] = [None if isinstance(g, StageFailed) else g for g in graded]
    found = agreement(rows, scores)
    model = next((str(g["model_grader"]) for g in scores if g is not None), settings.roles["grader"].model)
    markdown = render_calibration(found, source, model, settings.grader_samples)
    path = write_calibration(
        output_dir / "calibration",
        found,
        [_result(r, g) for r, g in zip(rows, graded, strict=True)],
        markdown,
    )
    if found.failed == found.rows:
        raise RunFailed(f"the grader ({model}) graded none of the {found.rows} calibration rows; see {path}")
    return _lines(found, model, path)
