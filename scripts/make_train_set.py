"""Make the training prompt set data/train/: AdvBench (MIT) and a databricks-dolly-15k sample (CC BY-SA 3.0).

Usage: .venv/bin/python scripts/make_train_set.py ../shared/data data

Training prompts must not come from an evaluation set (XSTest stays the sample and evaluation set; a seeded
100 of the 520 AdvBench behaviours are held out for evaluation, see scripts/make_eval_sets.py). This writes
data/train/part-0000{0..7}.parquet with the columns id, prompt, label and source: the other 420 AdvBench
harmful behaviours (`goal`, label `unsafe`, id `advbench-<row>`, 1-based data row of harmful_behaviors.csv)
and as many benign Dolly instructions (label `safe`, id `dolly-<line>`, 1-based line of dolly_sample.jsonl:
the first distinct ones in file order, out of the first DOLLY_POOL), each shuffled with a fixed seed and
interleaved, so that every partition is half harmful, half benign (104 or 106 rows).
Prompts that overlap an evaluation set of data/eval_sets.toml are left out (and listed): run
scripts/make_eval_sets.py first, which depends only on the constants and selections here. The licences and
attributions are copied beside the partitions.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.decontaminate import find_overlap, load_eval_sets, normalise

PARTITIONS = 8
SEED = 20240501
HOLD_OUT_SEED = 20240611  # which AdvBench behaviours are held out for evaluation
HELD_OUT = 100
ADVBENCH_ROWS = 520
# The Dolly rows training may take: the first this many distinct instructions (the training AdvBench count and
# 20 spare for overlaps). Evaluation sets use only rows outside them.
DOLLY_POOL = ADVBENCH_ROWS - HELD_OUT + 20
SCHEMA = pa.schema(
    [("id", pa.string()), ("prompt", pa.string()), ("label", pa.string()), ("source", pa.string())]
)
DOLLY_LICENSE = """\
databricks-dolly-15k: Copyright (2023) Databricks, Inc.
Licensed under the Creative Commons Attribution-ShareAlike 3.0 Unported License (CC BY-SA 3.0):
https://creativecommons.org/licenses/by-sa/3.0/ (legal code: https://creativecommons.org/licenses/by-sa/3.0/legalcode).
Some material derives from Wikipedia (CC BY-SA 3.0, (c) Wikipedia editors and contributors).
The `dolly-*` prompts of data/train/ are a part of it, unmodified, and so are the questions and answers of
data/eval/utility.parquet (multiple-choice items made from other rows' instructions and responses, whose
choices are shuffled): share them, and anything that contains them, under the same licence and with this
attribution. DOLLY_ATTRIBUTION.md: the source and the selection.
"""


def advbench(source: Path) -> list[dict[str, str]]:
    with (source / "harmful_behaviors.csv").open(encoding="utf-8", newline="") as handle:
        goals = [row["goal"] for row in csv.DictReader(handle)]
    return [
        {"id": f"advbench-{n:03d}", "prompt": goal, "label": "unsafe", "source": "advbench"}
        for n, goal in enumerate(goals, start=1)
    ]


def held_out_ids() -> set[str]:
    """The ids of the AdvBench behaviours held out for evaluation (seeded: the same on every run)."""
    numbers = random.Random(HOLD_OUT_SEED).sample(range(1, ADVBENCH_ROWS + 1), HELD_OUT)
    return {f"advbench-{n:03d}" for n in numbers}


def split_advbench(source: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The AdvBench rows for training and the held-out ones (in file order)."""
    rows, held = advbench(source), held_out_ids()
    if len(rows) != ADVBENCH_ROWS:
        raise SystemExit(f"{source}: expected {ADVBENCH_ROWS} AdvBench behaviours, found {len(rows)}")
    return [r for r in rows if r["id"] not in held], [r for r in rows if r["id"] in held]


def dolly(source: Path, wanted: int) -> list[dict[str, str]]:
    """The first `wanted` distinct (normalised) instructions, in file order."""
    rows, seen = [], set()
    lines = (source / "dolly_sample.jsonl").read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        prompt = json.loads(line)["instruction"]
        if (key := normalise(prompt)) in seen:
            continue
        seen.add(key)
        rows.append({"id": f"dolly-{n:03d}", "prompt": prompt, "label": "safe", "source": "dolly"})
        if len(rows) == wanted:
            break
    return rows


def without_evaluation_prompts(rows: list[dict[str, str]], data: Path) -> list[dict[str, str]]:
    overlap = find_overlap(load_eval_sets(data / "eval_sets.toml"), [r["prompt"] for r in rows])
    for i, match in overlap.matches.items():
        print(f"left out {rows[i]['id']}: {match.kind} match of {match.eval_set} {match.eval_id}")
    return [r for i, r in enumerate(rows) if i not in overlap.matches]


def interleaved(harmful: list[dict[str, str]], benign: list[dict[str, str]]) -> list[dict[str, str]]:
    """Both lists shuffled (seeded), then alternated: every slice of the result is half and half."""
    shuffle = random.Random(SEED).shuffle
    shuffle(harmful)
    shuffle(benign)
    return [row for pair in zip(harmful, benign, strict=True) for row in pair]


def partitions(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The interleaved rows in PARTITIONS slices of whole harmful/benign pairs (sizes differ by one pair)."""
    base, extra = divmod(len(rows) // 2, PARTITIONS)
    sizes = [2 * (base + (i < extra)) for i in range(PARTITIONS)]
    starts = [sum(sizes[:i]) for i in range(PARTITIONS)]
    return [rows[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def main(shared: Path, data: Path) -> None:
    harmful = without_evaluation_prompts(split_advbench(shared / "advbench")[0], data)
    benign = without_evaluation_prompts(dolly(shared / "dolly", DOLLY_POOL), data)[: len(harmful)]
    rows = interleaved(harmful, benign)
    out = data / "train"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.parquet"):
        stale.unlink()
    for i, part in enumerate(partitions(rows)):
        pq.write_table(pa.Table.from_pylist(part, schema=SCHEMA), out / f"part-{i:05d}.parquet")
    # Beside the partition directories, so that `pandas.read_parquet(data / "train")` reads only Parquet.
    shutil.copyfile(shared / "advbench" / "LICENSE", data / "ADVBENCH_LICENSE")
    shutil.copyfile(shared / "advbench" / "README.md", data / "ADVBENCH_ATTRIBUTION.md")
    shutil.copyfile(shared / "dolly" / "README.md", data / "DOLLY_ATTRIBUTION.md")
    (data / "DOLLY_LICENSE").write_text(DOLLY_LICENSE, encoding="utf-8")
    labels = {label: sum(r["label"] == label for r in rows) for label in ("unsafe", "safe")}
    print(f"wrote {len(rows)} prompts ({labels}) in {PARTITIONS} partitions to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
