"""One training run with TRL: the trainer (SFTTrainer or DPOTrainer, LoRA or full), run, and saved.

Typed Any where transformers, TRL and peft are involved: their own annotations do not type-check this use.
torch, transformers, TRL and peft are imported inside the functions (seconds to import; not for --help).
"""

from __future__ import annotations

import logging
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aidsafe.errors import ConfigError, InputError, Interrupted
from aidsafe.interrupt import STOPPING
from aidsafe.train_config import TrainSettings
from aidsafe.train_data import ExportData

Report = Callable[[str], None]
LORA_DROPOUT = 0.05


@dataclass(frozen=True)
class Run:
    """What a finished run measured."""

    log_history: list[dict[str, Any]]  # the trainer's: one entry per logged step (every step), then evals
    eval_before: dict[str, float] | None  # on the validation split, before and after training
    eval_after: dict[str, float] | None
    started: datetime
    ended: datetime
    train_seconds: float  # the trainer's own train() time
    steps: int
    epochs: float
    peak_rss_bytes: int  # of this process, since it started (model loading included)
    peak_cuda_bytes: int | None


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: no CUDA device available (torch {torch.__version__})")
    return wanted


def precision(device: str) -> str:
    """float32 on the CPU; bf16 mixed precision on a GPU that supports it."""
    import torch

    return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def check_template(tokenizer: Any, data: ExportData) -> None:
    """The base's chat template must exist and render what the export holds."""
    template = tokenizer.chat_template
    if not template:
        raise ConfigError("the base model's tokenizer has no chat template: it cannot read conversations")
    splits = [s for s in (data.train, data.validation) if s is not None]
    found = next((s for s in splits if s.has_reasoning_field), None)
    if found is not None and "reasoning_content" not in str(template):
        raise InputError(
            found.path, "the CoT is in reasoning_content, which this model's chat template does not render "
            "(it would be dropped from training); export with `--cot think` (or `--cot none`)",
        )  # fmt: skip


def _trainer_args(kind: str, settings: TrainSettings, device: str, workdir: Path) -> dict[str, Any]:
    return {
        "output_dir": str(workdir), "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps or -1,
        "learning_rate": settings.learning_rate_for(kind), "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size, "seed": settings.seed, "data_seed": settings.seed,
        "max_length": settings.max_length, "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no",
        "report_to": "none", "disable_tqdm": True, "use_cpu": device == "cpu", "fp16": False,
        "bf16": precision(device) == "bf16", "activation_checkpointing": settings.checkpointing,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device == "cuda", "dataset_num_proc": None,
    }  # fmt: skip


def _lora(settings: TrainSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_rank, lora_alpha=2 * settings.lora_rank, lora_dropout=LORA_DROPOUT,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )  # fmt: skip


def build_trainer(
    kind: str, model: Any, tokenizer: Any, data: ExportData, settings: TrainSettings, workdir: Path
) -> Any:
    """SFTTrainer (loss on the assistant's answer) or DPOTrainer (LoRA: its reference is the base)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    device = resolve_device(settings.device)
    values = _trainer_args(kind, settings, device, workdir)
    train = Dataset.from_list(data.train.rows)
    evals = Dataset.from_list(data.validation.rows) if data.validation else None
    common = {"model": model, "processing_class": tokenizer, "train_dataset": train, "eval_dataset": evals,
              "peft_config": _lora(settings) if settings.lora else None}  # fmt: skip
    trainer: Any
    if kind == "sft":
        trainer = SFTTrainer(args=SFTConfig(**values), **common)
    else:
        trainer = DPOTrainer(args=DPOConfig(**values, beta=settings.beta), **common)
    trainer.remove_callback(PrinterCallback)  # prints every log dict (added when progress bars are off)
    return trainer


def progress_callback(report: Report) -> Any:
    """Reports the loss about ten times a run, and stops the run (Interrupted) on Ctrl-C or SIGTERM."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if STOPPING.is_set():
                raise Interrupted("interrupted: training stopped; no checkpoint was written")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            every = max(1, state.max_steps // 10)
            if logs and "loss" in logs and (state.global_step % every == 0 or state.global_step == 1):
                report(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}")

    return Progress()


def _evaluate(trainer: Any, has_eval: bool) -> dict[str, float] | None:
    return {k: float(v) for k, v in trainer.evaluate().items()} if has_eval else None


def peak_memory(device: str) -> tuple[int, int | None]:
    """Peak RSS of this process (bytes) and, on a GPU, peak CUDA memory allocated by torch."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return rss, int(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def run_trainer(trainer: Any, data: ExportData, report: Report) -> Run:
    """Validation loss before, the training, validation loss after."""
    trainer.add_callback(progress_callback(report))
    started = datetime.now(UTC)
    before = _evaluate(trainer, data.validation is not None)
    output = trainer.train()
    after = _evaluate(trainer, data.validation is not None)
    rss, cuda = peak_memory(str(trainer.args.device.type))
    state = trainer.state
    return Run(
        log_history=list(state.log_history), eval_before=before, eval_after=after, started=started,
        ended=datetime.now(UTC), train_seconds=float(output.metrics["train_runtime"]),
        steps=int(state.global_step), epochs=float(state.epoch or 0), peak_rss_bytes=rss,
        peak_cuda_bytes=cuda,
    )  # fmt: skip


def save_model(trainer: Any, tokenizer: Any, lora: bool, directory: Path) -> None:
    """The trained model as a plain checkpoint (a LoRA adapter merged in; the adapter also in adapter/)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model.save_pretrained(directory / "adapter")
        (directory / "adapter" / "README.md").unlink(missing_ok=True)  # peft's empty model card template
        model = model.merge_and_unload()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers, datasets and TRL in aidsafe's output."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for name in ("trl", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # TRL 1.16 still reads transformers 5's deprecated gradient_checkpointing names
    warnings.filterwarnings(
        "ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning
    )


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads for the block (None: its default, one per core)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
