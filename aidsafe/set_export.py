"""`aidsafe export sets`: one record per prompt with the unordered set of its kept traces, split by prompt,
with a card: the input of set-supervised fine-tuning (`aidsafe train ssft`).

A record is `id`, `prompt`, `traces` (a list of {cot, response, configuration, scores}), `traces_count` and
`diversity`. The traces are a set: never joined into one assistant turn, never tied to a forking token; their
order in the list is shuffled per prompt (seeded), so that nothing downstream can learn from it. Prompts with
no kept trace are left out (and counted in the card). With `thresholds` (`--min-score`), the stored traces are
selected again with those minimum scores and the row's own similarity rule, instead of the stage's choice.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd

from aidsafe.card import code_version, front_matter, licence_section, loading_section
from aidsafe.decontaminate import DEFAULT_EVAL_SETS
from aidsafe.errors import AidsafeError
from aidsafe.export import Exported, content_hash, decontaminated, stage_rows, write_splits
from aidsafe.schemas import METRICS
from aidsafe.trace_selection import Selection, select

COLUMNS_NOTE = (
    "Columns id, prompt, traces (a list of {cot, response, configuration, scores}), traces_count, diversity"
)


def reselected(row: dict[str, Any], thresholds: dict[str, int]) -> dict[str, Any]:
    """The row with its traces selected again with other minimum scores (same similarity rule)."""
    rule = Selection(thresholds, float(row["traces_similarity"]), int(row["traces_ngram"]))
    traces, _, diversity = select(row["traces"], rule)
    return {**row, "traces": traces, "traces_diversity": diversity}


def set_record(row: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """The prompt's kept traces as an unordered set (None: none was kept)."""
    kept = [
        {
            "cot": "\n".join(str(t) for t in trace["cot"]),
            "response": trace["response"],
            "configuration": trace["configuration"],
            "scores": {m: int(trace["scores"][m]) for m in METRICS},
        }
        for trace in row["traces"]
        if trace["kept"]
    ]
    if not kept:
        return None
    random.Random(f"{seed}:{row['id']}").shuffle(kept)
    diversity = row.get("traces_diversity")
    return {
        "id": row["id"], "prompt": row["prompt"], "traces": kept, "traces_count": len(kept),
        "diversity": None if diversity is None or pd.isna(diversity) else float(diversity),
    }  # fmt: skip


def _selection_note(thresholds: dict[str, int] | None) -> str:
    if thresholds is None:
        return "## Selection\n\nThe traces the `traces` stage kept (its recipe's minimum scores).\n"
    minimum = ", ".join(f"{m} >= {n}" for m, n in thresholds.items()) or "none"
    return f"## Selection\n\nSelected again at export with the minimum scores: {minimum}.\n"


def _card(rows: pd.DataFrame, records: list[dict[str, Any]], counts: dict[str, int], notes: list[str],
          config: str, empty: int) -> str:  # fmt: skip
    table = "\n".join(["| split | prompts |", "|---|---|", *(f"| {n} | {c} |" for n, c in counts.items())])
    sizes = pd.Series([r["traces_count"] for r in records]).value_counts().sort_index()
    sizes_table = "\n".join(
        ["| traces | prompts |", "|---|---|", *(f"| {n} | {c} |" for n, c in sizes.items())]
    )
    mean = pd.Series([r["diversity"] for r in records], dtype=float).mean()
    diversity = "n/a" if pd.isna(mean) else f"{mean:.3f}"
    return "\n".join([
        front_matter(counts, "parquet", config),
        f"# aidsafe trace sets\n\nSets of different chains of thought per prompt, made by aidsafe "
        f"{code_version()} (`aidsafe traces`): each trace deliberated under its own configuration (agents' "
        "focus, temperature, model), refined, graded, kept when it met the minimum scores and was not a "
        "near-duplicate of another. `traces` is an unordered set: train it with a set objective (`aidsafe "
        "train ssft`: forking tokens matched to traces), not as one conversation.\n",
        f"## Splits\n\nBy distinct prompt (seeded).\n\n{table}\n",
        f"## Set sizes\n\n{sizes_table}\n\nMean pairwise diversity of the sets (1 - Jaccard of word "
        f"n-grams): {diversity}. Left out: {empty} prompt(s) without a kept "
        "trace.\n",
        f"## How to load\n\n{loading_section(counts, COLUMNS_NOTE, 'parquet')}",
        *notes,
        f"## Licence of the inputs\n\n{licence_section(rows)}\n",
    ])  # fmt: skip


def export_sets(
    output_dir: Path, dest: Path | None, split: tuple[tuple[float, float, float], int],
    decontaminate: bool = False, eval_sets: Path = DEFAULT_EVAL_SETS,
    thresholds: dict[str, int] | None = None,
) -> Exported:  # fmt: skip
    """Write OUTPUT/export/sets (or dest): splits in Parquet and JSONL, and README.md."""
    rows = stage_rows("traces", output_dir, "`aidsafe traces`")
    if thresholds is not None:
        rows = [reselected(row, thresholds) for row in rows]
    rows, overlap, note = decontaminated(rows, eval_sets, decontaminate)
    notes = [note]
    pairs = [(row, record) for row in rows if (record := set_record(row, split[1])) is not None]
    if not pairs:
        raise AidsafeError(
            f"{output_dir / 'traces'}: no prompt has a kept trace: nothing to export (`--min-score none` "
            "keeps every distinct trace)"
        )
    target = dest or output_dir / "export" / "sets"
    sources, records = [p[0] for p in pairs], [p[1] for p in pairs]
    counts = write_splits(sources, records, split, target, ("parquet", "jsonl"))
    config = f"sets-{content_hash(target, counts, 'parquet')}"
    notes.append(_selection_note(thresholds))
    card = _card(pd.DataFrame(rows), records, counts, notes, config, len(rows) - len(pairs))
    (target / "README.md").write_text(card, "utf-8")
    return Exported(target, counts, overlap, decontaminate)
