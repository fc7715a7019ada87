"""Step `report`: AIDSAFE vs the zero-shot baseline (Markdown + PNG charts), and the kept rows."""

from __future__ import annotations

from pathlib import Path

from aidsafe.stage import StepResult, WholeStep


def make_report(output_dir: Path, thresholds: dict[str, int] | None) -> StepResult:
    """Build and write the report from graded/ (and baseline/); write the rows meeting the thresholds
    (None: the default thresholds)."""
    from aidsafe.dpo_report import read_dpo_stats
    from aidsafe.pipeline import step_names  # the pipeline lists this step: import it when running
    from aidsafe.report import WHAT, build_report, metrics_table, render_markdown
    from aidsafe.report_files import load_results, write_kept, write_report_files  # matplotlib, pandas
    from aidsafe.thresholds import resolve_thresholds

    limits = resolve_thresholds(thresholds)
    graded, baseline, failures = load_results(output_dir)
    data = build_report(graded, baseline, failures, limits, step_names())
    data.dpo = read_dpo_stats(output_dir)
    kept = write_kept(output_dir, limits)
    path = write_report_files(data, output_dir, limits)
    return StepResult(
        path=path,
        lines=[
            f"report:   {path}",
            f"kept:     {kept} rows in {output_dir / 'kept'}/",
            *(
                f"warning:  self-graded: {found.rows} of {found.total} {WHAT[method]} (see the report)"
                for method, found in data.self_graded.items()
            ),
        ],
        markdown=render_markdown(data, []),
        table=metrics_table(data),
    )


REPORT = WholeStep(
    name="report",
    help="the report (AIDSAFE vs baseline) and the kept rows (OUTPUT/graded -> OUTPUT/report, OUTPUT/kept)",
    reads="grade",
    output="kept",
    run=make_report,
)
