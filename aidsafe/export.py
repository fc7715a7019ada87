"""Trainer-ready datasets: SFT conversations and DPO preference pairs, split by prompt without leakage.

Formats are the conversational ones that TRL trainers and Hugging Face `datasets` read directly:
SFT rows have `messages` (a list of {role, content}); DPO rows have `prompt`, `chosen` and `rejected`, each
a list of messages. The CoT goes inside <think>...</think> before the response (default), with
cot="field" in the assistant message's `reasoning_content`, or with cot="none" nowhere (the response alone).
Every exported prompt is checked against the evaluation sets (aidsafe.decontaminate): the overlap is reported
in the card, or dropped on request.

An SFT export's answers come from the refined stage (source="refined", the method) or, as its control
(SFT_OG with cot="none"), from the zero-shot baseline (source="baseline"): the baseline's answers to the same
prompts, those of the kept rows, whatever the baseline's own scores, split the same way by prompt.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.decontaminate import (
    DEFAULT_EVAL_SETS,
    EvalIndex,
    Overlap,
    card_section,
    find_overlap,
    load_eval_sets,
)
from aidsafe.errors import AidsafeError
from aidsafe.partitions import write_atomic
from aidsafe.pipeline import output_files
from aidsafe.pipeline import step as pipeline_step

CotStyle = Literal["think", "field", "none"]
Source = Literal["refined", "baseline"]
SPLITS = ("train", "validation", "test")
BASELINE_NOTE = (
    "## Source: the zero-shot baseline (control)\n\nThe answers in this export are the zero-shot baseline's "
    "(LLM_ZS: one call per prompt with the same policies, `OUTPUT/baseline/`), not the refined AIDSAFE ones: "
    "the control of the method (SFT_OG when exported with `--cot none`). Its prompts are those of the kept "
    "rows, the ones the refined SFT export has, whatever the baseline's own scores (so the two differ only "
    "in the answers), and each prompt is in the same split as in the refined export of the same run, seed "
    "and ratios. The scores above are the baseline's.\n"
)


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.9,0.05,0.05' -> train, validation, test ratios (they must add up to 1)."""
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise AidsafeError(f"--split {text!r}: expected three numbers, e.g. 0.9,0.05,0.05") from exc
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise AidsafeError(f"--split {text!r}: three non-negative ratios adding up to 1, e.g. 0.9,0.05,0.05")
    return ratios[0], ratios[1], ratios[2]


def assistant_message(thoughts: Sequence[str], response: str, cot: CotStyle) -> dict[str, str]:
    reasoning = "\n".join(str(t) for t in thoughts)
    if cot == "none":
        return {"role": "assistant", "content": response}
    if cot == "field":
        return {"role": "assistant", "content": response, "reasoning_content": reasoning}
    return {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{response}"}


def sft_record(row: dict[str, Any], cot: CotStyle, source: Source = "refined") -> dict[str, Any]:
    """One SFT example from a kept (or baseline) row: the user prompt and the source's CoT + response."""
    return {
        "id": row["id"],
        "messages": [
            {"role": "user", "content": row["prompt"]},
            assistant_message(row[f"{source}_cot"] or [], row[f"{source}_response"], cot),
        ],
    }


def dpo_record(row: dict[str, Any], cot: CotStyle) -> dict[str, Any]:
    """One preference pair: the refined CoT is chosen, the belief-induced one rejected (same plain prompt)."""
    return {
        "id": row["id"],
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [assistant_message(row["refined_cot"], row["refined_response"], cot)],
        "rejected": [assistant_message(row["rejected_cot"], row["rejected_response"], cot)],
    }


def _prompt_key(prompt: str) -> str:
    return hashlib.sha256(" ".join(prompt.split()).lower().encode()).hexdigest()


def assign_splits(prompts: Iterable[str], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Split by distinct prompt (normalised), seeded: the same prompt never lands in two splits."""
    keys = sorted({_prompt_key(p) for p in prompts})
    random.Random(seed).shuffle(keys)
    n_train = round(len(keys) * ratios[0])
    n_val = round(len(keys) * ratios[1])
    names = ["train"] * n_train + ["validation"] * n_val + ["test"] * (len(keys) - n_train - n_val)
    return dict(zip(keys, names, strict=True))


def write_splits(
    rows: list[dict[str, Any]],
    records: list[dict[str, Any]],
    split: tuple[tuple[float, float, float], int],
    directory: Path,
    formats: Sequence[str],
    split_prompts: Iterable[str] | None = None,
) -> dict[str, int]:
    """<split>.parquet and/or <split>.jsonl for train/validation/test; returns the rows of each split.

    split: the ratios and the seed. One table is built from all records so every split has the same schema.
    split_prompts: the prompts the split is drawn over (default: the rows'; they must include the rows').
    """
    ratios, seed = split
    split_of = assign_splits(split_prompts or (r["prompt"] for r in rows), ratios, seed)
    names = [split_of[_prompt_key(r["prompt"])] for r in rows]
    table = pa.Table.from_pylist(records)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in SPLITS:
        part = table.take(pa.array([i for i, n in enumerate(names) if n == name], type=pa.int64()))
        counts[name] = part.num_rows
        for stale in (directory / f"{name}.parquet", directory / f"{name}.jsonl"):
            stale.unlink(missing_ok=True)  # an earlier export's file of this split
        if not part.num_rows:
            continue  # an empty split is not written: no loader can read an empty Parquet file
        if "parquet" in formats:
            write_atomic(part, directory / f"{name}.parquet")
        if "jsonl" in formats:
            tmp = directory / f".{name}.jsonl.tmp"
            tmp.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part.to_pylist()), "utf-8"
            )
            tmp.replace(directory / f"{name}.jsonl")
    return counts


def content_hash(directory: Path, counts: dict[str, int], suffix: str) -> str:
    digest = hashlib.sha256()
    for name in (n for n, rows in counts.items() if rows):
        digest.update((directory / f"{name}.{suffix}").read_bytes())
    return digest.hexdigest()[:12]


def stage_rows(step: str, output_dir: Path, needs: str) -> list[dict[str, Any]]:
    files = output_files(step, output_dir)
    if not files:
        raise AidsafeError(f"{output_dir / pipeline_step(step).output}: nothing to export; run {needs} first")
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def decontaminated(
    rows: list[dict[str, Any]], eval_sets: Path, decontaminate: bool
) -> tuple[list[dict[str, Any]], Overlap, str]:
    """A standalone stage's rows checked against the evaluation sets: the rows (overlapping ones dropped
    when asked), the overlap, and the card's section on it."""
    overlap = find_overlap(load_eval_sets(eval_sets), [r["prompt"] for r in rows])
    note = card_section(overlap, [str(r["id"]) for r in rows], decontaminate)
    kept = [r for i, r in enumerate(rows) if i not in overlap.matches] if decontaminate else rows
    return kept, overlap, note


@dataclass
class Selection:
    """The rows an export writes, their records, what was left out (reason -> rows), extra card sections."""

    rows: list[dict[str, Any]]
    records: list[dict[str, Any]]
    left_out: dict[str, int]
    notes: list[str] = field(default_factory=list)
    split_prompts: list[str] | None = None  # what the split is drawn over, when not the rows' prompts

    def drop(self, positions: Collection[int], reason: str) -> None:
        keep = [i for i in range(len(self.rows)) if i not in positions]
        self.rows, self.records = [self.rows[i] for i in keep], [self.records[i] for i in keep]
        self.left_out[reason] = len(positions)


class Exported(NamedTuple):
    target: Path
    counts: dict[str, int]
    overlap: Overlap
    dropped: bool  # the overlapping rows were dropped (--decontaminate)


def _below_thresholds(output_dir: Path, kept: int) -> dict[str, int]:
    graded = sum(pq.read_metadata(f).num_rows for f in output_files("grade", output_dir))
    return {"graded rows below the score thresholds": graded - kept}


def select_sft(output_dir: Path, cot: CotStyle) -> Selection:
    rows = stage_rows("report", output_dir, "`aidsafe report` (or `aidsafe run`)")
    return Selection(rows, [sft_record(r, cot) for r in rows], _below_thresholds(output_dir, len(rows)))


def select_baseline(output_dir: Path, cot: CotStyle) -> Selection:
    """The baseline's answers to the kept rows' prompts (matched by id and prompt), split like the kept rows.

    "Kept" is the refined rows' verdict, not the baseline's: the control gets the same prompts as the method
    (its own scores are in the card), and the prompts the baseline has no row for are counted as left out.
    """
    kept = stage_rows("report", output_dir, "`aidsafe report` (or `aidsafe run`)")
    baseline = stage_rows("baseline", output_dir, "`aidsafe baseline` (or `aidsafe run --baseline`)")
    by_key = {(r["id"], r["prompt"]): r for r in baseline}
    rows = [by_key[(r["id"], r["prompt"])] for r in kept if (r["id"], r["prompt"]) in by_key]
    left_out = _below_thresholds(output_dir, len(kept))
    missing = "kept prompts without a baseline row (failed, or not in the baseline's input)"
    left_out[missing] = len(kept) - len(rows)
    records = [sft_record(r, cot, "baseline") for r in rows]
    return Selection(rows, records, left_out, [BASELINE_NOTE], [r["prompt"] for r in kept])


def select_dpo(output_dir: Path, cot: CotStyle) -> Selection:
    """The pairs: rows with a clearly worse answer whose chosen side meets the report's thresholds."""
    from aidsafe.dpo_report import OUTCOME_TEXT, dpo_markdown, dpo_stats
    from aidsafe.report_files import stored_thresholds  # matplotlib: import only when exporting
    from aidsafe.thresholds import resolve_thresholds

    candidates = stage_rows("dpo", output_dir, "`aidsafe dpo`")
    thresholds = resolve_thresholds(stored_thresholds(output_dir))  # the last report's (else the defaults)
    chosen_ok = [all(r[f"score_{m}"] >= v for m, v in thresholds.items()) for r in candidates]
    rows = [r for r, ok in zip(candidates, chosen_ok, strict=True) if r["dpo_pair"] and ok]
    outcomes = Counter(r.get("dpo_outcome") or "no_clear_margin" for r in candidates if not r["dpo_pair"])
    left_out = {f"rows where {OUTCOME_TEXT[k]}": n for k, n in outcomes.items()}
    left_out["pairs whose chosen answer is below the score thresholds"] = sum(
        r["dpo_pair"] and not ok for r, ok in zip(candidates, chosen_ok, strict=True)
    )
    notes = [dpo_markdown(dpo_stats(pd.DataFrame(candidates)))]
    return Selection(rows, [dpo_record(r, cot) for r in rows], left_out, notes)


def _select(kind: Literal["sft", "dpo"], output_dir: Path, cot: CotStyle, source: Source) -> Selection:
    if source == "baseline":
        if kind != "sft":
            raise AidsafeError(
                "--source baseline: only for sft (a DPO pair's chosen answer is the refined one)"
            )
        return select_baseline(output_dir, cot)
    return select_sft(output_dir, cot) if kind == "sft" else select_dpo(output_dir, cot)


def _split_prompts(chosen: Selection, sets: EvalIndex, decontaminate: bool) -> list[str] | None:
    """The prompts a split is drawn over, less those decontamination drops (as the refined export does)."""
    if chosen.split_prompts is None or not decontaminate:
        return chosen.split_prompts
    dropped = find_overlap(sets, chosen.split_prompts).matches
    return [p for i, p in enumerate(chosen.split_prompts) if i not in dropped]


def default_dest(output_dir: Path, kind: str, source: Source = "refined") -> Path:
    """OUTPUT/export/KIND, or OUTPUT/export/KIND-baseline for the baseline's answers."""
    return output_dir / "export" / (kind if source == "refined" else f"{kind}-{source}")


def export(
    kind: Literal["sft", "dpo"],
    output_dir: Path,
    dest: Path | None = None,
    cot: CotStyle = "think",
    formats: Sequence[str] = ("parquet", "jsonl"),
    split: tuple[tuple[float, float, float], int] = ((0.9, 0.05, 0.05), 0),
    decontaminate: bool = False,
    eval_sets: Path = DEFAULT_EVAL_SETS,
    source: Source = "refined",
) -> Exported:
    """Write an export (splits + README.md dataset card); returns its directory, the rows per split and the
    overlap of its prompts with the evaluation sets (dropped with decontaminate, else only reported)."""
    from aidsafe.card import render_card  # the card reads policies and failures: import only when exporting

    target = dest or default_dest(output_dir, kind, source)
    chosen = _select(kind, output_dir, cot, source)
    sets = load_eval_sets(eval_sets)
    overlap = find_overlap(sets, [r["prompt"] for r in chosen.rows])
    chosen.notes.append(card_section(overlap, [str(r["id"]) for r in chosen.rows], decontaminate))
    if decontaminate:
        chosen.drop(overlap.matches.keys(), "rows whose prompt overlaps an evaluation set (--decontaminate)")
    if not chosen.records:
        reasons = ", ".join(f"{k}: {v}" for k, v in chosen.left_out.items())
        raise AidsafeError(f"{kind}: no rows to export ({reasons})")
    prompts = _split_prompts(chosen, sets, decontaminate)
    counts = write_splits(chosen.rows, chosen.records, split, target, formats, prompts)
    suffix = "parquet" if "parquet" in formats else "jsonl"
    config = f"{kind}-{content_hash(target, counts, suffix)}"
    frame = pd.DataFrame(chosen.rows)
    card = render_card(kind, frame, counts, output_dir, chosen.left_out, suffix, config, chosen.notes)
    (target / "README.md").write_text(card, encoding="utf-8")
    return Exported(target, counts, overlap, decontaminate)
