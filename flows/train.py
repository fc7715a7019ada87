"""The `train` flow: fine-tune a local model on an export (aidsafe.train; ssft: aidsafe.ssft), as one
Prefect task.

The task is not retried: training fails on bad data, settings or memory, none of which goes away on its
own (and a rerun would redo the whole run). The flow publishes the training card as a Markdown artifact.
The checkpoint it writes loads with aidsafe.hf.load_causal_lm (`hf:OUTPUT` where aidsafe takes a model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from aidsafe.errors import ConfigError
from aidsafe.lock import output_lock
from aidsafe.ssft import SsftSettings, train_ssft
from aidsafe.train import TrainResult
from aidsafe.train import train as run_training
from aidsafe.train_config import TrainSettings

Kind = Literal["sft", "dpo", "ssft"]


@task(name="train", task_run_name="train-{kind}", cache_policy=NO_CACHE, retries=0)
def train_task(
    kind: Kind, data: str, output: str, base: str | None, settings: TrainSettings | SsftSettings,
    cache_dir: str | None,
) -> TrainResult:  # fmt: skip
    """Train and write the checkpoint, its card, loss curve and training log."""
    report = get_run_logger().info
    paths = Path(data), Path(output), Path(base) if base else None
    cache = Path(cache_dir) if cache_dir else None
    if kind == "ssft":
        if not isinstance(settings, SsftSettings):
            raise ConfigError("train ssft needs SsftSettings")
        return train_ssft(*paths, settings, cache, report=report)
    if not isinstance(settings, TrainSettings):
        raise ConfigError(f"train {kind} needs TrainSettings")
    return run_training(kind, *paths, settings, cache, report=report)


@flow(
    name="train",
    description="fine-tune a local model on an aidsafe export (TRL SFTTrainer / DPOTrainer; "
    "ssft: forking tokens matched to each prompt's traces)",
)
def train(
    kind: Kind = "sft",
    data: str = "out/export/sft",
    output: str = "out/model-sft",
    base: str | None = None,
    settings: TrainSettings | SsftSettings | None = None,
    cache_dir: str | None = None,
) -> TrainResult:
    """kind: sft, dpo or ssft; data: the export directory; output: the checkpoint directory; base: a local
    checkpoint directory (None: the embedded SmolLM2-135M); cache_dir: where the embedded model is converted
    (None: the settings' cache_dir)."""
    with output_lock(output):
        chosen = settings or (SsftSettings() if kind == "ssft" else TrainSettings())
        result = train_task(kind, data, output, base, chosen, cache_dir)
    create_markdown_artifact(key=f"aidsafe-train-{kind}", markdown=result.card,
                             description=f"aidsafe train {kind}: {output}")  # fmt: skip
    get_run_logger().info("; ".join(result.lines()))
    return result
