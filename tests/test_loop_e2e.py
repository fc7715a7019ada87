"""The whole loop on the embedded model, end to end: `aidsafe train sft` on an export, then `aidsafe eval` of
the fine-tuned checkpoint beside its base (both in process through transformers), judged by the embedded
model on its llama.cpp server, on the first prompt of every shipped evaluation set. The numbers of a 135M
model trained for a few steps mean nothing; the mechanics and the report's shape are what is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aidsafe.config import Options
from aidsafe.evaluation import DEFAULT_SETS
from aidsafe.train import train
from aidsafe.train_config import TrainSettings
from tests.test_train import make_export

pytestmark = pytest.mark.e2e
SETS = ("advbench", "jailbreak", "utility", "xstest")


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_a_checkpoint_aidsafe_train_wrote_is_evaluated_beside_its_base(tmp_path: Path) -> None:
    from flows.evaluate import evaluate

    cache = tmp_path / "cache"
    export, checkpoint = make_export(tmp_path / "export", "sft", 8), tmp_path / "sft"
    quick = TrainSettings(max_steps=4, batch_size=2, max_length=128, device="cpu", threads=1)
    train("sft", export, checkpoint, settings=quick, cache_dir=cache)
    out = tmp_path / "eval"
    options = Options(max_tokens=160, concurrency=1, cache_dir=cache)
    report = evaluate(str(out), ["base=hf:embedded", f"sft=hf:{checkpoint}"], str(DEFAULT_SETS), options, 1)
    rates = json.loads((out / "report" / "eval.json").read_text())
    for name in ("base", "sft"):
        assert (rates[name]["answered"], rates[name]["failed"]) == (len(SETS), 0), name
        rows = pd.read_parquet(out / name / "eval")
        assert sorted(rows["set"]) == list(SETS) and rows["reply"].str.strip().astype(bool).all()
        judged = rows[rows["set"] != "utility"]
        assert judged["model_judge"].eq("SmolLM2-135M-Instruct").all()  # the embedded judge, over HTTP
    assert rates["base"]["models"] != rates["sft"]["models"]  # named by their weights
    markdown = Path(report).read_text()
    assert "| metric | better | base | sft |" in markdown and (out / "report" / "jailbreak.png").is_file()
