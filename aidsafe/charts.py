"""PNG charts of a report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from aidsafe.report import ReportData
from aidsafe.schemas import METRICS


def _scores(report: ReportData, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharey=True)
    for ax, metric in zip(axes.flat, METRICS, strict=True):
        width = 0.8 / max(1, len(report.distributions))
        for i, (method, dist) in enumerate(report.distributions.items()):
            counts = dist[metric]
            ax.bar([s + i * width for s in counts], list(counts.values()), width=width, label=method)
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(1, 6))
    axes.flat[0].legend()
    fig.suptitle("Score distributions (1-5)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _deliberation(report: ReportData, path: Path) -> None:
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.5))
    left.bar(list(report.stop_reasons), list(report.stop_reasons.values()))
    left.set_title("stop reason")
    middle.bar([str(k) for k in report.rounds], list(report.rounds.values()))
    middle.set_title("deliberation rounds")
    right.bar(list(report.removals), list(report.removals.values()))
    right.set_title("refinement removals")
    for ax in (left, middle, right):  # counts: from 0, whole numbers (no -0.04 axis when every count is 0)
        ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
        ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_charts(report: ReportData, directory: Path) -> list[str]:
    """Write the charts; returns their file names (relative to directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    _scores(report, directory / "scores.png")
    _deliberation(report, directory / "deliberation.png")
    return ["scores.png", "deliberation.png"]
