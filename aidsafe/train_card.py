"""What `aidsafe train` writes beside the checkpoint: the training card (README.md), the loss curve
(loss.png), the run's record (training.json: base, data, settings, results; its `data` is the export
directory, which `aidsafe eval` checks its prompts against) and the trainer's log of every step
(training_log.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidsafe.train_config import BaseModelInfo, TrainSettings
from aidsafe.train_data import ExportData, Split
from aidsafe.train_run import LORA_DROPOUT, Run

RECORD_NAME = "training.json"  # also what marks a directory as a training output
LOG_NAME = "training_log.json"
REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer"}
OBJECTIVE = {
    "sft": "next-token loss on the assistant's answer only (each row as a prompt-completion pair)",
    "dpo": "DPO (sigmoid) on chosen vs rejected answers; the reference is the base model",
}


@dataclass(frozen=True)
class TrainRecord:
    """Everything about one finished run that the card and the log record."""

    kind: str
    data: ExportData
    base: BaseModelInfo
    settings: TrainSettings
    device: str
    precision: str
    run: Run
    seconds: float  # the whole run: loading, training, evaluation, saving
    parameters: tuple[int, int]  # trainable, total (before merging a LoRA adapter)


def train_losses(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, training loss) of every logged step."""
    return [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e]


def _split(split: Split | None) -> dict[str, Any] | None:
    return (
        None if split is None else {"file": str(split.path), "sha256": split.sha256, "rows": len(split.rows)}
    )


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    from aidsafe.card import code_version

    return {"aidsafe": code_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__}  # fmt: skip


def settings_used(record: TrainRecord) -> dict[str, Any]:
    """The settings as given, with the defaults they resolved to."""
    s = record.settings
    values = {"method": "LoRA" if s.lora else "full"} | s.model_dump(exclude={"lora"})
    values["learning_rate"] = s.learning_rate_for(record.kind)
    values["device"] = record.device if record.device == s.device else f"{record.device} (asked: {s.device})"
    if s.lora:
        values |= {
            "lora_alpha": 2 * s.lora_rank,
            "lora_dropout": LORA_DROPOUT,
            "lora_targets": "all linear layers",
        }
    else:
        del values["lora_rank"]
    if record.kind != "dpo":
        del values["beta"]
    return values | {"precision": record.precision, "lr_schedule": "linear, no warmup"}


def summary(record: TrainRecord) -> dict[str, Any]:
    """The run in one JSON-ready dict (the head of training_log.json; the card is rendered from it)."""
    losses, run = train_losses(record.run.log_history), record.run
    rewards = [e for e in run.log_history if "rewards/chosen" in e]
    return {
        "kind": record.kind, "trainer": TRAINERS[record.kind], "device": record.device,
        "base": {"source": record.base.source, "path": str(record.base.path), "sha256": record.base.sha256},
        "data": str(record.data.directory), "export_config": record.data.config,
        "splits": {"train": _split(record.data.train), "validation": _split(record.data.validation)},
        "settings": settings_used(record), "started": run.started.isoformat(), "ended": run.ended.isoformat(),
        "steps": run.steps, "epochs": run.epochs, "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None, "validation_before": run.eval_before,
        "validation_after": run.eval_after, "rewards_last_step": {k: rewards[-1][k] for k in REWARDS}
        if rewards else None, "train_seconds": run.train_seconds, "seconds": record.seconds,
        "peak_rss_bytes": run.peak_rss_bytes, "peak_cuda_bytes": run.peak_cuda_bytes,
        "parameters": {"trainable": record.parameters[0], "total": record.parameters[1]},
        "versions": _versions(),
    }  # fmt: skip


def write_records(record: TrainRecord, directory: Path) -> dict[str, Any]:
    """training.json (the summary) and training_log.json (every logged step and evaluation)."""
    head = summary(record)
    (directory / RECORD_NAME).write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    (directory / LOG_NAME).write_text(json.dumps(record.run.log_history, indent=1) + "\n", encoding="utf-8")
    return head


def loss_chart(history: list[dict[str, Any]], kind: str, path: Path) -> None:
    """The training loss per step (and, for DPO, the chosen and rejected rewards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2 if kind == "dpo" else 1, figsize=(10 if kind == "dpo" else 6, 3.5), squeeze=False
    )
    steps, losses = zip(*train_losses(history), strict=True) if train_losses(history) else ((), ())
    axes[0][0].plot(steps, losses, marker="." if len(steps) < 60 else None)
    axes[0][0].set(title=f"{kind.upper()} training loss", xlabel="step", ylabel="loss")
    if kind == "dpo":
        for name in REWARDS[:2]:
            points = [(e["step"], e[name]) for e in history if name in e]
            axes[0][1].plot([p[0] for p in points], [p[1] for p in points], label=name.split("/")[1])
        axes[0][1].set(title="implicit rewards", xlabel="step")
        axes[0][1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows: dict[str, Any]) -> str:
    lines = ["| setting | value |", "|---|---|", *(f"| {k} | {_number(v)} |" for k, v in rows.items())]
    return "\n".join(lines) + "\n"


def _data_section(s: dict[str, Any]) -> str:
    train, val = s["splits"]["train"], s["splits"]["validation"]
    lines = [f"- export: `{s['data']}` (card config `{s['export_config'] or 'n/a'}`)",
             f"- train split: `{train['file']}`, {train['rows']} rows, sha256 `{train['sha256']}`",
             f"- validation split: `{val['file']}`, {val['rows']} rows, sha256 `{val['sha256']}`" if val
             else "- validation split: none in the export (no validation loss)",
             f"- objective: {OBJECTIVE[s['kind']]}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _validation(s: dict[str, Any]) -> list[str]:
    before, after = s["validation_before"], s["validation_after"]
    if not before or not after:
        return []
    lines = [f"- validation loss: {before['eval_loss']:.4f} before, {after['eval_loss']:.4f} after"]
    if "eval_rewards/accuracies" in after:
        lines.append(f"- validation reward accuracy after: {after['eval_rewards/accuracies']:.3f}, margin "
                     f"{after['eval_rewards/margins']:.4f}")  # fmt: skip
    return lines


def _results(s: dict[str, Any]) -> str:
    mib, params = 1024 * 1024, s["parameters"]
    cuda = f", peak CUDA memory {s['peak_cuda_bytes'] / mib:.0f} MiB" if s["peak_cuda_bytes"] else ""
    first, last = _number(s["first_loss"]), _number(s["last_loss"])
    lines = [f"- started {s['started']}, ended {s['ended']} (UTC)",
             f"- steps: {s['steps']} ({s['epochs']:.2f} epochs)",
             f"- training loss: {first} at the first step, {last} at the last", *_validation(s)]  # fmt: skip
    if rewards := s["rewards_last_step"]:
        shown = ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in rewards.items())
        lines.append(f"- rewards at the last step: {shown}")
    lines += [f"- seconds: {s['train_seconds']:.1f} training, {s['seconds']:.1f} in all (load, evaluate, "
              f"save)", f"- peak memory: RSS {s['peak_rss_bytes'] / mib:.0f} MiB (the whole process){cuda}",
              f"- parameters: {params['trainable']:,} trained of {params['total']:,}"]  # fmt: skip
    return "\n".join(lines) + "\n\n![loss curve](loss.png)\n"


def render_card(s: dict[str, Any], output: Path) -> str:
    """The training card of a checkpoint, from its summary."""
    tags = ", ".join(["aidsafe", "trl", s["kind"], s["settings"]["method"].lower()])
    versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
    adapter = " and the LoRA adapter alone in `adapter/`" if s["settings"]["method"] == "LoRA" else ""
    return "\n".join([
        f"---\nlibrary_name: transformers\ntags: [{tags}]\n---\n",
        f"# aidsafe {s['kind'].upper()} checkpoint\n\nTRL's {s['trainer']} on an aidsafe export. A plain "
        f"transformers checkpoint{adapter}: `aidsafe.hf.load_causal_lm(Path('{output}'))`, "
        f"`AutoModelForCausalLM.from_pretrained('{output}')`, or `hf:{output}` where aidsafe takes a "
        "model.\n",
        f"## Base model\n\n- {s['base']['source']}\n- checkpoint `{s['base']['path']}`\n"
        f"- sha256 `{s['base']['sha256']}`\n",
        f"## Data\n\n{_data_section(s)}",
        f"## Settings\n\n{_table(s['settings'])}",
        f"## Results\n\n{_results(s)}",
        f"## Files\n\n`config.json`, `model.safetensors`, the tokenizer files{adapter.replace(' and', ',')}, "
        f"this card, `loss.png`, `{RECORD_NAME}` (this card's facts) and `{LOG_NAME}` (the trainer's log of "
        "every step).\n",
        f"## Versions\n\n{versions}\n",
    ])  # fmt: skip
