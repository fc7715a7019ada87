"""`aidsafe export rationales`: the student's training rows of a rationales run, split by prompt, with a card.

Each rationales row gives up to two student rows: input = a `[factual]` or `[counterfactual]` tag, the
question and the rationale; target = the answer that rationale supports (the true answer, or the
counterfactual one). Trained on both, a student has to follow its rationale: the question alone does not tell
which target a row wants. Rows are in `input`/`target` columns and, for TRL's SFT trainer, as `messages`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from aidsafe.card import code_version, front_matter, left_out_section, licence_section, loading_section
from aidsafe.decontaminate import DEFAULT_EVAL_SETS
from aidsafe.errors import AidsafeError
from aidsafe.export import Exported, content_hash, decontaminated, stage_rows, write_splits

TAGS = ("factual", "counterfactual")
COLUMNS_NOTE = "Columns id, source_id, kind, input, target, messages"


def student_input(tag: str, question: str, rationale: str) -> str:
    return f"[{tag}] Question: {question}\nRationale: {rationale}"


def student_records(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The factual row, and the counterfactual one when the row has a counterfactual rationale."""
    sides = [("factual", row["rationale"], row["rationale_answer"])]
    if row.get("counterfactual_rationale"):
        sides.append(("counterfactual", row["counterfactual_rationale"], row["counterfactual_answer"]))
    records = []
    for tag, rationale, target in sides:
        text = student_input(tag, row["prompt"], rationale)
        records.append({
            "id": f"{row['id']}-{tag}", "source_id": row["id"], "kind": tag, "input": text, "target": target,
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": target}],
        })  # fmt: skip
    return records


def _card(rows: pd.DataFrame, counts: dict[str, int], output_dir: Path, notes: list[str], config: str) -> str:
    table = "\n".join(["| split | rows |", "|---|---|", *(f"| {n} | {c} |" for n, c in counts.items())])
    teacher = ", ".join(sorted(rows["model_teacher"].dropna().unique()))
    modes = ", ".join(sorted(rows["rationale_mode"].dropna().unique()))
    return "\n".join([
        front_matter(counts, "parquet", config),
        f"# aidsafe rationales dataset\n\nStudent training rows made by aidsafe {code_version()}: rationales "
        f"written by the teacher `{teacher}` with {modes} decoding (true answer vs perturbed answer), each "
        "with a counterfactual rationale for a wrong answer. `input` is a `[factual]` or `[counterfactual]` "
        "tag, the question and the rationale; `target` is the answer that rationale supports (also as "
        "`messages`, TRL's conversational SFT format). Content warning: counterfactual targets are wrong on "
        "purpose, and may comply with harmful requests; train them only with their tag.\n",
        f"## Splits\n\nBy distinct question (seeded): both rows of a question are in one split.\n\n{table}\n",
        f"## How to load\n\n{loading_section(counts, COLUMNS_NOTE, 'parquet')}",
        f"## Left out\n\n{left_out_section(output_dir, {})}",
        *notes,
        f"## Licence of the inputs\n\n{licence_section(rows)}\n",
    ])  # fmt: skip


def export_rationales(
    output_dir: Path, dest: Path | None, split: tuple[tuple[float, float, float], int],
    decontaminate: bool = False, eval_sets: Path = DEFAULT_EVAL_SETS,
) -> Exported:  # fmt: skip
    """Write OUTPUT/export/rationales (or dest): splits in Parquet and JSONL, and README.md."""
    rows, overlap, note = decontaminated(stage_rows("rationales", output_dir, "`aidsafe rationales`"),
                                         eval_sets, decontaminate)  # fmt: skip
    notes = [note]
    pairs = [(row, record) for row in rows for record in student_records(row)]
    if not pairs:
        raise AidsafeError("rationales: no rows to export")
    target = dest or output_dir / "export" / "rationales"
    sources, records = [p[0] for p in pairs], [p[1] for p in pairs]
    counts = write_splits(sources, records, split, target, ("parquet", "jsonl"), [r["prompt"] for r in rows])
    config = f"rationales-{content_hash(target, counts, 'parquet')}"
    (target / "README.md").write_text(_card(pd.DataFrame(rows), counts, output_dir, notes, config), "utf-8")
    return Exported(target, counts, overlap, decontaminate)
