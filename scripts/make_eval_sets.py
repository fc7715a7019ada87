"""Make the evaluation sets of `aidsafe eval` in data/eval/: XSTest, held-out AdvBench, jailbreaks, utility.

Usage: .venv/bin/python scripts/make_eval_sets.py ../shared/data data
(then scripts/make_train_set.py, whose overlap check reads these sets through data/eval_sets.toml).

Reads data/xstest/, <shared>/advbench and <shared>/dolly; writes one Parquet file a set, every row with `id`
(unique across the sets), `prompt` (the exact text the target model is sent), `label` (safe or unsafe), `set`
and `category`:
- xstest.parquet: the 450 XSTest prompts (category: XSTest's `type`; `focus`, `note` kept);
- advbench.parquet: the AdvBench behaviours make_train_set.py holds out (seeded), category harmful_behaviour;
- jailbreak.parquet: every unsafe prompt of those two wrapped by each attack transform of
  policies/eval/jailbreaks/ (category and `transform`: its name; `source_id` and `source_prompt`: the
  prompt wrapped; id `<source_id>~<transform>`);
- utility.parquet: multiple-choice items made from Dolly open_qa/general_qa rows that training can never use
  (outside make_train_set.py's pool of DOLLY_POOL distinct instructions, nor a duplicate of one), with short
  responses: the row's response and the responses of 3 other such rows (seeded; the right answer at each
  letter equally often), prompt rendered by aidsafe.mcq from policies/eval/mcq.toml.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from make_train_set import DOLLY_POOL, dolly, split_advbench

from aidsafe import jailbreaks, mcq
from aidsafe.decontaminate import normalise

SEED = 20240612
UTILITY_CATEGORIES = ("open_qa", "general_qa")
MAX_ANSWER_WORDS = 20  # a reference answer short enough to be one choice
DISTRACTORS = 3
BASE = [
    ("id", pa.string()),
    ("prompt", pa.string()),
    ("label", pa.string()),
    ("set", pa.string()),
    ("category", pa.string()),
]
SCHEMAS = {
    "xstest": pa.schema([*BASE, ("focus", pa.string()), ("note", pa.string())]),
    "advbench": pa.schema(BASE),
    "jailbreak": pa.schema(
        [*BASE, ("transform", pa.string()), ("source_id", pa.string()), ("source_prompt", pa.string())]
    ),
    "utility": pa.schema(
        [
            *BASE,
            ("question", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("answer", pa.string()),
            ("source_id", pa.string()),
        ]
    ),
}


def xstest(data: Path) -> list[dict[str, Any]]:
    """All XSTest prompts of data/xstest/, labelled as XSTest labels them, category its `type`."""
    frame = pd.read_parquet(data / "xstest")
    return [
        {
            "id": r.id,
            "prompt": r.prompt,
            "label": r.label,
            "set": "xstest",
            "category": r.type,
            "focus": r.focus,
            "note": r.note,
        }
        for r in frame.itertuples()
    ]


def advbench(shared: Path) -> list[dict[str, Any]]:
    """The AdvBench behaviours held out of data/train/ (ids and prompts as make_train_set.py makes them)."""
    held = split_advbench(shared / "advbench")[1]
    return [{**r, "set": "advbench", "category": "harmful_behaviour"} for r in held]


def jailbreak(unsafe: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every unsafe prompt under every transform, grouped by transform."""
    return [
        {
            "id": f"{r['id']}~{name}",
            "prompt": jailbreaks.apply(transform, r["prompt"]),
            "label": "unsafe",
            "set": "jailbreak",
            "category": name,
            "transform": name,
            "source_id": r["id"],
            "source_prompt": r["prompt"],
        }
        for name, transform in jailbreaks.load_transforms().items()
        for r in unsafe
    ]


def unused_dolly(shared: Path) -> list[dict[str, Any]]:
    """The Dolly rows (with their line numbers) whose instruction training never takes."""
    pool = {normalise(r["prompt"]) for r in dolly(shared / "dolly", DOLLY_POOL)}
    lines = (shared / "dolly" / "dolly_sample.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{**json.loads(line), "line": n} for n, line in enumerate(lines, start=1)]
    return [r for r in rows if normalise(r["instruction"]) not in pool]


def one_line(text: str) -> str:
    """A response as one choice: its whitespace runs (newlines too) as one space."""
    return " ".join(text.split())


def utility_questions(shared: Path) -> list[dict[str, Any]]:
    """The unused question-answering rows with a short response, no question or response twice."""
    seen: set[str] = set()
    rows = []
    for r in unused_dolly(shared):
        keys = {normalise(r["instruction"]), normalise(r["response"])}
        short = 0 < len(r["response"].split()) <= MAX_ANSWER_WORDS
        if r["category"] in UTILITY_CATEGORIES and short and not r["context"] and not seen & keys:
            seen.update(keys)
            rows.append(r)
    return rows


def utility_items(shared: Path) -> list[dict[str, Any]]:
    """Multiple-choice items: each question's own response among other questions' responses."""
    rows = utility_questions(shared)
    rng = random.Random(SEED)
    places = [i % (DISTRACTORS + 1) for i in range(len(rows))]  # where the right answer goes: every letter
    rng.shuffle(places)  # as often (within one)
    items = []
    for r, place in zip(rows, places, strict=True):
        choices = [one_line(o["response"]) for o in rng.sample([o for o in rows if o is not r], DISTRACTORS)]
        choices.insert(place, one_line(r["response"]))
        items.append(
            {
                "id": f"utility-dolly-{r['line']:03d}",
                "question": r["instruction"].strip(),
                "choices": choices,
                "answer": place,
                "category": r["category"],
                "source_id": f"dolly-{r['line']:03d}",
            }
        )
    return items


def write(out: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """One set as <out>/<name>.parquet, with the set's columns only."""
    schema = SCHEMAS[name]
    table = pa.Table.from_pylist([{c: r[c] for c in schema.names} for r in rows], schema=schema)
    pq.write_table(table, out / f"{name}.parquet")
    print(f"wrote {len(rows)} rows to {out / name}.parquet")


def main(shared: Path, data: Path) -> None:
    """Make every set, check that the ids are unique across them, and replace data/eval/."""
    out = data / "eval"
    out.mkdir(parents=True, exist_ok=True)
    sets = {"xstest": xstest(data), "advbench": advbench(shared)}
    unsafe = [r for rows in sets.values() for r in rows if r["label"] == "unsafe"]
    sets["jailbreak"] = jailbreak(unsafe)
    sets["utility"] = mcq.eval_rows(utility_items(shared), "utility items", "utility")
    ids = [r["id"] for rows in sets.values() for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit("evaluation ids are not unique across the sets")
    for stale in out.glob("*.parquet"):
        stale.unlink()
    for name, rows in sets.items():
        write(out, name, rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
