"""`aidsafe train ssft`: set-supervised fine-tuning with forking tokens, on a set export, offline.

The model gets K new special tokens `<think1>` ... `<thinkK>`, each to open one way of reasoning. For each
prompt the K x M losses of every (forking token, trace) pair are computed, the least-loss assignment of
tokens to traces is found (aidsafe.forks.match; `--assignment fixed` is the baseline: trace j after token j,
under which the tokens do not specialise), and only the matched pairs are trained (aidsafe.ssft_loop).

Full fine-tuning, not LoRA: LoRA freezes the embeddings, so the K new rows would stay the identical mean
they start as and every fork would stay the same; LoRA with trainable embeddings would train the whole
(tied) vocabulary matrix anyway, a fifth of this model, for little saved. On the CPU a 135M model's full
AdamW state is about 2 GB (peak RSS about 3.5 GiB in all). The default learning rate, 1e-4, was measured
on benchmarks/bench_ssft.py's set (6 prompts, 2 modes, K = 2): the loss falls from 2.43 to 0.10 in 6 steps
and to 0.03 in 24, by when every forking token has specialised on one mode.

The output is a plain checkpoint like `aidsafe train sft`'s (aidsafe.hf.load_causal_lm loads it), written
through the same staging directory and lock, with forks.json (its forking tokens and assignment rule), the
card README.md, loss.png, training.json and training_log.json (every step; aidsafe.ssft_card).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aidsafe.errors import ConfigError, InputError
from aidsafe.fork_losses import Encoded
from aidsafe.fork_tokens import add_fork_tokens, existing_forks, prompt_ids, trace_ids
from aidsafe.forks import fork_usage, usage_share
from aidsafe.ssft_card import FORKS_NAME, SsftRecord, SsftRun, write_outputs
from aidsafe.ssft_data import SetData, SetSplit, load_sets
from aidsafe.ssft_loop import LoopSettings, matchings, set_loss, total_steps, train_loop
from aidsafe.train import TrainResult, check_output, resolve_base, staged
from aidsafe.train_config import BaseModelInfo, Device, from_options
from aidsafe.train_run import Report, cpu_threads, peak_memory, quiet_libraries, resolve_device, timer

_log = logging.getLogger("aidsafe.train")


class SsftSettings(BaseModel):
    """Everything that decides an SSFT run besides its data and base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forks: int = Field(4, ge=1, le=64, description="forking tokens <think1> ... <thinkK> (K)")
    assignment: Literal["match", "fixed"] = Field(
        "match", description="match: the least-loss token-trace matching per prompt; fixed: trace j after "
        "token j (the baseline, under which the tokens do not specialise)",
    )  # fmt: skip
    epochs: float = Field(1.0, gt=0, description="passes over the train split")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; beats --epochs (none: by epochs)")
    learning_rate: float = Field(
        1e-4, gt=0, description="peak learning rate of full fine-tuning, decayed linearly without warmup"
    )
    max_length: int = Field(1024, ge=16, le=1_000_000, description="tokens per (token, trace) sequence")
    seed: int = Field(0, ge=0, description="seed of the data order")
    device: Device = Field("auto", description="auto: cuda when available, else cpu")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads of torch (none: one per core)")
    batch_size: int = Field(2, ge=1, le=4096, description="prompts per optimizer step")


def ssft_settings(values: dict[str, Any]) -> SsftSettings:
    """Settings from option values (None: not given); a bad value is a ConfigError naming the option."""
    return from_options(SsftSettings, values)


def encode(tokenizer: Any, split: SetSplit, max_length: int) -> list[Encoded]:
    """A split's rows in token ids, each trace cut to fit max_length after the prompt and forking token."""
    rows = []
    for number, row in enumerate(split.rows, start=1):
        prompt = prompt_ids(tokenizer, row.prompt)
        room = max_length - len(prompt) - 1
        if room < 1:
            raise InputError(split.path, f"the prompt is {len(prompt)} tokens with its chat template: no "
                             f"room for a trace within --max-length {max_length}", row=number)  # fmt: skip
        traces = [trace_ids(tokenizer, t.cot, t.response)[:room] for t in row.traces]
        rows.append(Encoded(row.id, prompt, traces, [t.configuration for t in row.traces]))
    return rows


def _pad(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def _check_template(tokenizer: Any) -> None:
    if not tokenizer.chat_template:
        raise ConfigError("the base model's tokenizer has no chat template: it cannot read conversations")
    if tokenizer.eos_token_id is None:
        raise ConfigError("the base model's tokenizer has no eos token: a trace could not end")


@dataclass(frozen=True)
class Prepared:
    """The base with its forking tokens, and the data in its token ids."""

    model: Any
    tokenizer: Any
    forks: list[int]
    tokens: list[str]
    train: list[Encoded]
    validation: list[Encoded] | None


def prepare(data: SetData, base: BaseModelInfo, settings: SsftSettings, device: str) -> Prepared:
    from aidsafe.fork_tokens import fork_tokens
    from aidsafe.hf import load_causal_lm

    model, tokenizer = load_causal_lm(base.path, "cpu")
    _check_template(tokenizer)
    forks = add_fork_tokens(model, tokenizer, settings.forks)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    validation = encode(tokenizer, data.validation, settings.max_length) if data.validation else None
    return Prepared(model, tokenizer, forks, fork_tokens(settings.forks),
                    encode(tokenizer, data.train, settings.max_length), validation)  # fmt: skip


def _run(p: Prepared, settings: SsftSettings, report: Report) -> SsftRun:
    """Validation loss before, the training loop, validation loss after."""
    import torch

    started, pad = datetime.now(UTC), _pad(p.tokenizer)
    rule, steps = settings.assignment, total_steps(len(p.train), settings.batch_size, settings.epochs,
                                                   settings.max_steps)  # fmt: skip
    torch.manual_seed(settings.seed)
    before = set_loss(p.model, p.validation, p.forks, rule, pad) if p.validation else None
    elapsed = timer()
    loop = LoopSettings(rule, steps, settings.batch_size, settings.learning_rate, settings.seed)
    log = train_loop(p.model, p.train, p.forks, p.tokens, loop, pad, report)
    seconds = elapsed()
    after = set_loss(p.model, p.validation, p.forks, rule, pad) if p.validation else None
    rss, cuda = peak_memory(str(next(p.model.parameters()).device.type))
    return SsftRun(log, before, after, started, datetime.now(UTC), seconds, steps,
                   steps * settings.batch_size / len(p.train), rss, cuda)  # fmt: skip


def save(p: Prepared, settings: SsftSettings, directory: Path) -> None:
    """The trained model and tokenizer as a plain checkpoint, and forks.json."""
    p.model.save_pretrained(directory)
    p.tokenizer.save_pretrained(directory)
    forks = {"tokens": p.tokens, "assignment": settings.assignment}
    (directory / FORKS_NAME).write_text(json.dumps(forks, indent=1) + "\n", encoding="utf-8")


def fit(
    data: SetData, base: BaseModelInfo, settings: SsftSettings, staging: Path, report: Report
) -> SsftRecord:
    """Load the base, add the forking tokens, train, save into staging/checkpoint; what was measured."""
    elapsed = timer()
    quiet_libraries()
    device = resolve_device(settings.device)
    with cpu_threads(settings.threads):
        p = prepare(data, base, settings, device)
        total = sum(x.numel() for x in p.model.parameters())
        report(f"ssft: {len(p.train)} prompts, {data.train.traces} traces, {settings.forks} forking tokens "
               f"({settings.assignment}), {total:,} parameters trained on {device}")  # fmt: skip
        run = _run(p, settings, report)
    save(p, settings, staging / "checkpoint")
    return SsftRecord(data, base, settings, device, run, elapsed(), total, p.tokens)


def train_ssft(
    data_dir: Path,
    output: Path,
    base: Path | None = None,
    settings: SsftSettings | None = None,
    cache_dir: Path | None = None,
    report: Report = _log.info,
) -> TrainResult:
    """Train on a set export's train split (validation loss on its validation split); write the checkpoint."""
    chosen = settings or SsftSettings()
    data = load_sets(data_dir)
    check_output(output)
    base_info = resolve_base(base, cache_dir)

    def work(staging: Path) -> TrainResult:
        return write_outputs(fit(data, base_info, chosen, staging, report), staging / "checkpoint", output)

    return staged(output, work)


@dataclass(frozen=True)
class ForkUsage:
    """How a model's forking tokens match the train traces: per token, and each prompt's pairs."""

    tokens: list[str]
    usage: list[int]  # traces matched to each token
    share: float  # of the most used token
    matches: list[dict[str, Any]]  # per prompt: {"id", "pairs": [[token, trace index, configuration]]}


def fork_usage_after(model: Path | tuple[Any, Any], data: Path | SetData, max_length: int = 1024,
                     threads: int | None = None) -> ForkUsage:  # fmt: skip
    """The least-loss matching of a model's forks on the train prompts (no gradients): the same measure for
    a run trained with match or fixed. model: a checkpoint directory, or a loaded (model, tokenizer)."""
    from aidsafe.hf import load_causal_lm
    from aidsafe.ssft_loop import matched

    net, tokenizer = load_causal_lm(model) if isinstance(model, Path) else model
    tokens = existing_forks(tokenizer)
    if not tokens:
        raise ConfigError("the model has no forking tokens: not an SSFT checkpoint")
    sets = load_sets(data) if isinstance(data, Path) else data
    rows, forks = encode(tokenizer, sets.train, max_length), tokenizer.convert_tokens_to_ids(tokens)
    with cpu_threads(threads):
        found = matchings(net, rows, forks, _pad(tokenizer))
    usage = fork_usage(found, len(tokens))
    pairs = [matched(r, a, tokens, None) for r, a in zip(rows, found, strict=True)]
    return ForkUsage(tokens, usage, usage_share(usage), [{"id": m["id"], "pairs": m["pairs"]} for m in pairs])
