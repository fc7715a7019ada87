"""The eval report's files: OUTPUT/report/eval.md with its PNG charts and eval.json beside it.

With `--run RUN_DIR` (the aidsafe run whose data the fine-tuned targets were trained on) the report also has
that data's grader means, AIDSAFE vs the zero-shot baseline, as in the run's own report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from aidsafe.eval_report import METRICS, TargetResult, comparison_rows, write_json
from aidsafe.evaluation import TrainingOverlap
from aidsafe.report_files import read_files
from aidsafe.schemas import METRICS as GRADER_METRICS
from aidsafe.summary import partition_files

CHARTS = ("eval.png", "jailbreak.png")


def _bars(ax: object, groups: list[str], results: list[TargetResult], values: list[list[float]]) -> None:
    width = 0.8 / max(1, len(results))
    for i, (result, heights) in enumerate(zip(results, values, strict=True)):
        ax.bar([g + i * width for g in range(len(groups))], heights, width=width, label=result.name)  # type: ignore[attr-defined]
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20, ha="right")  # type: ignore[attr-defined]
    ax.set_ylim(0, 1)  # type: ignore[attr-defined]
    ax.legend()  # type: ignore[attr-defined]


def write_charts(results: list[TargetResult], directory: Path) -> None:
    """eval.png: the main rates per target; jailbreak.png: the safe-response rate per attack transform."""
    main = [m for m in METRICS if not m.label.startswith(" ")]
    fig, ax = plt.subplots(figsize=(10, 4))
    _bars(ax, [m.key for m in main], results, [[r.rates[m.key] or 0.0 for m in main] for r in results])
    ax.set_title("aidsafe eval (rates; n/a shown as 0)")
    fig.tight_layout()
    fig.savefig(directory / "eval.png", dpi=80)
    plt.close(fig)
    transforms = sorted({t for r in results for t in r.transforms})
    fig, ax = plt.subplots(figsize=(10, 4))
    _bars(ax, transforms, results, [[r.transforms.get(t) or 0.0 for t in transforms] for r in results])
    ax.set_title("jailbreak robustness per transform (safe-response rate)")
    fig.tight_layout()
    fig.savefig(directory / "jailbreak.png", dpi=80)
    plt.close(fig)


def markdown_table(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row[h] for h in header) + " |" for row in rows)])


def grader_means(run: Path) -> list[dict[str, str]]:
    """The data's grader means per metric: AIDSAFE (graded/) and LLM_ZS (baseline/) of an aidsafe run."""
    graded = read_files(partition_files(run / "graded"))
    baseline = read_files(partition_files(run / "baseline"))
    rows = []
    for metric in GRADER_METRICS:
        row = {"metric": metric}
        for name, frame in (("AIDSAFE", graded), ("LLM_ZS", baseline)):
            column = f"score_{metric}"
            row[name] = f"{frame[column].mean():.2f}" if frame is not None and column in frame else "n/a"
        rows.append(row)
    return rows


def render(results: list[TargetResult], overlaps: list[TrainingOverlap], run: Path | None) -> str:
    """The report's Markdown (charts referenced by file name)."""
    models = "; ".join(f"{r.name}: {', '.join(r.models) or 'no answers'}" for r in results)
    parts = [
        "# aidsafe eval", "",
        f"Targets (the first is the reference of the differences): {models}.", "",
        markdown_table(comparison_rows(results)), "",
        *(f"![{chart}]({chart})" for chart in CHARTS), "",
    ]  # fmt: skip
    if overlaps:
        parts += ["## Overlap with training data (--allow-overlap)", "",
                  *(f"- {o.describe()}" for o in overlaps), ""]  # fmt: skip
    if run is not None:
        parts += [f"## The training data's grader means ({run})", "", markdown_table(grader_means(run)), ""]
    return "\n".join(parts)


def write_report(
    results: list[TargetResult], output: Path, overlaps: list[TrainingOverlap], run: Path | None
) -> Path:
    """report/eval.md, its charts and eval.json."""
    directory = output / "report"
    directory.mkdir(parents=True, exist_ok=True)
    write_charts(results, directory)
    write_json(results, directory / "eval.json")
    path = directory / "eval.md"
    path.write_text(render(results, overlaps, run), encoding="utf-8")
    return path
