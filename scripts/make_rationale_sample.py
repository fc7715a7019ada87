"""Write data/rationales/sample.parquet: the input of the README's `aidsafe rationales` command.

Six prompts of the training set (data/train, made by make_train_set.py): the first three AdvBench behaviours
(answer `refuse`) and the first three Dolly instructions (answer `comply`) of its first partition. Columns:
id, prompt, label, source, answer. Run: .venv/bin/python scripts/make_rationale_sample.py
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
PER_SOURCE = 3


def main() -> None:
    rows = pq.read_table(ROOT / "data" / "train" / "part-00000.parquet").to_pylist()
    chosen = []
    for source, answer in (("advbench", "refuse"), ("dolly", "comply")):
        found = [r for r in rows if r["source"] == source][:PER_SOURCE]
        chosen += [{k: r[k] for k in ("id", "prompt", "label", "source")} | {"answer": answer} for r in found]
    target = ROOT / "data" / "rationales" / "sample.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(chosen), target)
    print(f"{target}: {len(chosen)} rows")


if __name__ == "__main__":
    main()
