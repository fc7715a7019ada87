"""Convert the XSTest CSV (CC BY 4.0) into the Parquet partitions shipped under data/.

Usage: python scripts/convert_xstest.py ../shared/data/xstest data
Writes data/xstest/part-0000{0..4}.parquet (all 450 prompts) and data/sample/xstest-sample.parquet
(a small balanced sample for the README's main command), plus the attribution and licence beside them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARTITIONS = 5
SAMPLE_PER_LABEL = 3


def main(source: Path, data: Path) -> None:
    frame = pd.read_csv(source / "xstest_prompts.csv", dtype=str, keep_default_na=False)
    frame["id"] = "xstest-" + frame["id"]
    frame = frame[["id", "prompt", "type", "label", "focus", "note"]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    out = data / "xstest"
    out.mkdir(parents=True, exist_ok=True)
    size = -(-len(frame) // PARTITIONS)
    for i in range(PARTITIONS):
        pq.write_table(table.slice(i * size, size), out / f"part-{i:05d}.parquet")
    sample = pd.concat(
        [
            frame[frame["label"] == label].sample(SAMPLE_PER_LABEL, random_state=7)
            for label in ("safe", "unsafe")
        ]
    )
    (data / "sample").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(sample, preserve_index=False), data / "sample" / "xstest-sample.parquet"
    )
    # Beside the partition directories, so that `pandas.read_parquet(data / "xstest")` reads only Parquet.
    shutil.copyfile(source / "LICENSE", data / "XSTEST_LICENSE")
    shutil.copyfile(source / "README.md", data / "XSTEST_ATTRIBUTION.md")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
