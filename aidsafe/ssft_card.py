"""What `aidsafe train ssft` writes beside the checkpoint: training.json (the run's record: base, data and its
hashes, settings, results, fork usage), training_log.json (every step with its assignments), loss.png and
the card README.md; forks.json (the forking tokens) is written with the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aidsafe.ssft_data import SetData, SetSplit
from aidsafe.train import TrainResult
from aidsafe.train_card import LOG_NAME, RECORD_NAME, loss_chart
from aidsafe.train_config import BaseModelInfo

if TYPE_CHECKING:
    from aidsafe.ssft import SsftSettings

FORKS_NAME = "forks.json"
OBJECTIVE = (
    "per prompt, the mean token NLL of every (forking token, trace) pair; the least-loss matching of tokens "
    "to traces (Hungarian) or the fixed pairs; the mean over the matched pairs of the step is trained"
)


@dataclass(frozen=True)
class SsftRun:
    """What a finished training loop measured."""

    log: list[dict[str, Any]]  # one entry per optimizer step
    validation_before: float | None
    validation_after: float | None
    started: datetime
    ended: datetime
    train_seconds: float
    steps: int
    epochs: float
    peak_rss_bytes: int
    peak_cuda_bytes: int | None


@dataclass(frozen=True)
class SsftRecord:
    data: SetData
    base: BaseModelInfo
    settings: SsftSettings
    device: str
    run: SsftRun
    seconds: float  # the whole run: loading, training, evaluation
    parameters: int  # all trained
    tokens: list[str]


def _split(split: SetSplit | None) -> dict[str, Any] | None:
    if split is None:
        return None
    return {"file": str(split.path), "sha256": split.sha256, "rows": len(split.rows), "traces": split.traces}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from aidsafe.card import code_version

    return {"aidsafe": code_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def summary(record: SsftRecord) -> dict[str, Any]:
    """The run in one JSON-ready dict (training.json; the card is rendered from it)."""
    run, data = record.run, record.data
    last = run.log[-1] if run.log else {"fork_usage": [0] * len(record.tokens), "usage_share": 0.0}
    settings = record.settings.model_dump() | {"method": "full", "lr_schedule": "linear, no warmup"}
    return {
        "kind": "ssft", "trainer": "aidsafe.ssft_loop (custom torch loop)", "device": record.device,
        "base": {"source": record.base.source, "path": str(record.base.path), "sha256": record.base.sha256},
        "data": str(data.directory), "export_config": data.config,
        "splits": {"train": _split(data.train), "validation": _split(data.validation)},
        "settings": settings, "forks": record.tokens, "started": run.started.isoformat(),
        "ended": run.ended.isoformat(), "steps": run.steps, "epochs": run.epochs,
        "first_loss": run.log[0]["loss"] if run.log else None,
        "last_loss": run.log[-1]["loss"] if run.log else None,
        "validation_before": run.validation_before, "validation_after": run.validation_after,
        "fork_usage": last["fork_usage"], "usage_share": last["usage_share"],
        "train_seconds": run.train_seconds, "seconds": record.seconds, "peak_rss_bytes": run.peak_rss_bytes,
        "peak_cuda_bytes": run.peak_cuda_bytes, "parameters": {"trainable": record.parameters,
        "total": record.parameters}, "versions": _versions(),
    }  # fmt: skip


def _usage_table(s: dict[str, Any]) -> str:
    total = sum(s["fork_usage"]) or 1
    lines = ["| token | traces matched | share |", "|---|---:|---:|"]
    lines += [f"| `{t}` | {n} | {n / total:.2f} |" for t, n in zip(s["forks"], s["fork_usage"], strict=True)]
    return "\n".join(lines) + "\n"


def _results(s: dict[str, Any]) -> str:
    lines = [
        f"- steps: {s['steps']} ({s['epochs']:.2f} epochs), {s['train_seconds']:.1f} s training, "
        f"{s['seconds']:.1f} s in all; peak RSS {s['peak_rss_bytes'] / 2**20:.0f} MiB",
        f"- training loss: {s['first_loss']:.4f} at the first step, {s['last_loss']:.4f} at the last",
    ]
    if s["validation_before"] is not None and s["validation_after"] is not None:
        lines.append(
            f"- validation loss: {s['validation_before']:.4f} before, {s['validation_after']:.4f} after"
        )
    return "\n".join(lines) + "\n\n![loss curve](loss.png)\n"


def render_card(s: dict[str, Any], output: Path) -> str:
    """The card of an SSFT checkpoint, from its summary."""
    train, val, settings = s["splits"]["train"], s["splits"]["validation"], s["settings"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    return "\n".join([
        "---\nlibrary_name: transformers\ntags: [aidsafe, ssft, forking-tokens, full]\n---\n",
        f"# aidsafe SSFT checkpoint\n\nSet-supervised fine-tuning with {len(s['forks'])} forking tokens "
        f"(`{s['forks'][0]}` ... `{s['forks'][-1]}`, in `{FORKS_NAME}`): after the chat template's "
        "generation prompt, each token opens one way of reasoning. Load it with "
        f"`aidsafe.hf.load_causal_lm(Path('{output}'))`; sample every fork with "
        "`aidsafe.fork_sampling.sample_forks`.\n",
        f"## Base model\n\n- {s['base']['source']}\n- sha256 `{s['base']['sha256']}`\n",
        f"## Data\n\n- set export: `{s['data']}` (card config `{s['export_config'] or 'n/a'}`)\n"
        f"- train: `{train['file']}`, {train['rows']} prompts, {train['traces']} traces, sha256 "
        f"`{train['sha256']}`\n" + (f"- validation: {val['rows']} prompts, sha256 `{val['sha256']}`\n" if val
        else "- validation: none\n") + f"- objective: {OBJECTIVE}\n",
        f"## Settings\n\n| setting | value |\n|---|---|\n{rows}\n",
        f"## Results\n\n{_results(s)}",
        f"## Fork usage (cumulative over training; top share {s['usage_share']:.2f})\n\n{_usage_table(s)}",
        f"## Files\n\nthe model and tokenizer, `{FORKS_NAME}`, this card, `loss.png`, `{RECORD_NAME}` and "
        f"`{LOG_NAME}` (every step with each prompt's assignment).\n",
    ])  # fmt: skip


def write_outputs(record: SsftRecord, checkpoint: Path, output: Path) -> TrainResult:
    """training.json, training_log.json, loss.png and the card, beside the saved model."""
    head = summary(record)
    (checkpoint / RECORD_NAME).write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    (checkpoint / LOG_NAME).write_text(json.dumps(record.run.log, indent=1) + "\n", encoding="utf-8")
    loss_chart(record.run.log, "ssft", checkpoint / "loss.png")
    card = render_card(head, output)
    (checkpoint / "README.md").write_text(card, encoding="utf-8")
    before, after = head["validation_before"], head["validation_after"]
    return TrainResult(
        kind="ssft", output=str(output), steps=head["steps"], device=head["device"], method="full",
        first_loss=head["first_loss"], last_loss=head["last_loss"],
        validation_loss=(before, after) if before is not None and after is not None else None, rewards=None,
        seconds=head["seconds"], peak_rss_bytes=head["peak_rss_bytes"], card=card,
    )  # fmt: skip
