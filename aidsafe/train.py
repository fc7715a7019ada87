"""`aidsafe train sft|dpo`: fine-tune a local model on an export with TRL, offline, on the CPU or a GPU.

The base is a local transformers checkpoint directory or, by default, the embedded SmolLM2-135M-Instruct
converted from its GGUF (aidsafe.hf). The output directory becomes a plain checkpoint (config.json,
model.safetensors, tokenizer files; a LoRA adapter is merged in and also kept in adapter/) that
aidsafe.hf.load_causal_lm loads (`hf:OUTPUT` in `aidsafe eval`), with the training card README.md, loss.png,
training.json (the run's record; its `data` is the export directory) and training_log.json (every step).

Everything is written into a hidden staging directory inside the output first and moved into place when
the run has finished, config.json last (and an earlier checkpoint's config.json is removed first): a run
killed at any point leaves no directory that looks like a finished checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aidsafe.errors import ConfigError
from aidsafe.lock import output_lock
from aidsafe.train_card import RECORD_NAME, TrainRecord, loss_chart, render_card, write_records
from aidsafe.train_config import BaseModelInfo, TrainSettings, checkpoint_base, embedded_base
from aidsafe.train_data import ExportData, Kind, load_export
from aidsafe.train_run import (
    Report,
    build_trainer,
    check_template,
    cpu_threads,
    precision,
    quiet_libraries,
    resolve_device,
    run_trainer,
    save_model,
    timer,
)

NOT_OURS = ("logs",)  # the CLI's Prefect server log; hidden entries (the lock, staging) are never ours
_log = logging.getLogger("aidsafe.train")


class TrainResult(BaseModel):
    """A finished run, as the flow returns it: where it is, the loss, the cost, and the card."""

    kind: str
    output: str
    steps: int
    device: str
    method: str
    first_loss: float | None
    last_loss: float | None
    validation_loss: tuple[float, float] | None  # before, after
    rewards: dict[str, float] | None  # DPO: at the last step
    seconds: float
    peak_rss_bytes: int
    card: str

    def lines(self) -> list[str]:
        lines = [
            f"model:    {self.output}/ ({self.kind}, {self.method}, {self.steps} steps on {self.device})"
        ]
        if self.first_loss is not None and self.last_loss is not None:
            lines.append(
                f"loss:     {self.first_loss:.4f} at step 1 -> {self.last_loss:.4f} at step {self.steps}"
            )
        if self.validation_loss:
            lines.append(f"validation loss: {self.validation_loss[0]:.4f} -> {self.validation_loss[1]:.4f}")
        if self.rewards:
            lines.append(
                "rewards:  " + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in self.rewards.items())
            )
        peak = self.peak_rss_bytes / 2**20
        return [*lines, f"time:     {self.seconds:.0f} s, peak RSS {peak:.0f} MiB",
                f"card:     {Path(self.output) / 'README.md'}"]  # fmt: skip


def _ours(output: Path) -> list[Path]:
    return [p for p in output.iterdir() if not p.name.startswith(".") and p.name not in NOT_OURS]


def check_output(output: Path) -> None:
    """The output must be new, empty, or an earlier training output (which a finished run replaces)."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: not a directory")
    if not output.is_dir():
        return
    found = sorted(p.name for p in _ours(output))
    if found and RECORD_NAME not in found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ConfigError(f"--output {output}: holds other files ({shown}); train into a new directory")


def publish(checkpoint: Path, output: Path) -> None:
    """Move a finished checkpoint into output, replacing an earlier one: config.json, which makes a
    directory a checkpoint, is removed first and moved in last."""
    (output / "config.json").unlink(missing_ok=True)
    for old in _ours(output):  # an earlier run's files, replaced or (like adapter/ after --full) not made now
        _remove(old)
    for item in sorted(checkpoint.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(item, output / item.name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def resolve_base(base: Path | None, cache_dir: Path | None) -> BaseModelInfo:
    """--base PATH, or the embedded model converted into the cache (settings' cache_dir when not given)."""
    if base is not None:
        return checkpoint_base(base)
    if cache_dir is None:
        from aidsafe.config import load_settings

        cache_dir = load_settings().cache_dir
    return embedded_base(cache_dir)


def _parameters(model: Any) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def fit(kind: Kind, data: ExportData, base: BaseModelInfo, settings: TrainSettings, staging: Path,
        report: Report) -> TrainRecord:  # fmt: skip
    """Load the base, train, save the model into staging/checkpoint; what was measured."""
    from aidsafe.hf import load_causal_lm

    elapsed = timer()
    quiet_libraries()
    device = resolve_device(settings.device)
    model, tokenizer = load_causal_lm(base.path, "cpu")  # the trainer moves it to its device
    check_template(tokenizer, data)
    trainer = build_trainer(kind, model, tokenizer, data, settings, staging / "work")
    parameters = _parameters(trainer.model)
    rows = len(data.train.rows)
    report(f"{kind}: {rows} rows, {parameters[0]:,} of {parameters[1]:,} parameters trained on {device}")
    with cpu_threads(settings.threads):
        run = run_trainer(trainer, data, report)
    save_model(trainer, tokenizer, settings.lora, staging / "checkpoint")
    return TrainRecord(kind, data, base, settings, device, precision(device), run, elapsed(), parameters)


def _result(head: dict[str, Any], output: Path, card: str) -> TrainResult:
    before, after = head["validation_before"], head["validation_after"]
    return TrainResult(
        kind=head["kind"], output=str(output), steps=head["steps"], device=head["device"],
        method=head["settings"]["method"], first_loss=head["first_loss"], last_loss=head["last_loss"],
        validation_loss=(before["eval_loss"], after["eval_loss"]) if before and after else None,
        rewards=head["rewards_last_step"], seconds=head["seconds"], peak_rss_bytes=head["peak_rss_bytes"],
        card=card,
    )  # fmt: skip


def write_outputs(record: TrainRecord, checkpoint: Path, output: Path) -> TrainResult:
    """The training log, the loss curve and the card, beside the saved model."""
    head = write_records(record, checkpoint)
    loss_chart(record.run.log_history, record.kind, checkpoint / "loss.png")
    card = render_card(head, output)
    (checkpoint / "README.md").write_text(card, encoding="utf-8")
    return _result(head, output, card)


def train(
    kind: Kind,
    data_dir: Path,
    output: Path,
    base: Path | None = None,
    settings: TrainSettings | None = None,
    cache_dir: Path | None = None,
    report: Report = _log.info,
) -> TrainResult:
    """Train on an export's train split (validation loss on its validation split); write the checkpoint."""
    chosen = settings or TrainSettings()
    data = load_export(data_dir, kind)
    check_output(output)
    base_info = resolve_base(base, cache_dir)

    def work(staging: Path) -> TrainResult:
        record = fit(kind, data, base_info, chosen, staging, report)
        return write_outputs(record, staging / "checkpoint", output)

    return staged(output, work)


def staged(output: Path, work: Callable[[Path], TrainResult]) -> TrainResult:
    """work(staging) under the output's lock, in a new hidden staging directory inside the output, then
    its staging/checkpoint published into the output; the staging directory is removed either way."""
    with output_lock(output):
        for stale in output.glob(".staging-*"):  # left by a killed run (the lock says none is running)
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output))
        try:
            result = work(staging)
            publish(staging / "checkpoint", output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return result
