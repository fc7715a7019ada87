"""The SSFT training loop: per optimizer step, a batch of prompts, each matched and its matched pairs trained.

A custom torch loop (AdamW, linear decay without warmup, gradient clipping at 1.0 as the Trainer does) rather
than a Trainer subclass: a step needs the matching between a no-grad and a grad pass over sequences that the
step itself builds. The step's loss is the mean over every matched pair of its prompts (each pair's loss the
mean token NLL of its trace). Each step is logged with the assignment per prompt ([token, trace index,
configuration] pairs, and the prompt's loss matrix), the cumulative fork usage and the top usage share.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aidsafe.errors import Interrupted
from aidsafe.fork_losses import Encoded, assign, loss_matrix, matched_backward
from aidsafe.forks import Assignment, fixed, fork_usage, match, usage_share
from aidsafe.interrupt import STOPPING
from aidsafe.train_run import timer

MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class LoopSettings:
    rule: str  # "match" or "fixed"
    steps: int
    batch_size: int
    learning_rate: float
    seed: int


def total_steps(rows: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    """max_steps, else enough batches for the epochs (a partial last batch counts)."""
    return max_steps or max(1, math.ceil(epochs * math.ceil(rows / batch_size)))


def batches(rows: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Row indices, shuffled anew every epoch, in batches (the last of an epoch may be smaller)."""
    rng = random.Random(seed)
    while True:
        order = list(range(rows))
        rng.shuffle(order)
        yield from (order[s : s + batch_size] for s in range(0, rows, batch_size))


def matched(row: Encoded, assignment: Assignment, tokens: Sequence[str], matrix: Any) -> dict[str, Any]:
    """One prompt's assignment, as logged."""
    pairs = [[tokens[i], j, row.configurations[j]] for i, j in sorted(assignment.pairs)]
    losses = None if matrix is None else [[round(float(v), 4) for v in r] for r in matrix]
    return {"id": row.id, "pairs": pairs, "losses": losses}


def step(
    model: Any, rows: list[Encoded], forks: Sequence[int], rule: str, pad: int
) -> tuple[float, list[Any]]:
    """Match every prompt of the batch, then backward of the mean over all their matched pairs."""
    model.eval()  # the matrix without dropout
    chosen = [assign(rule, model, row, forks, pad) for row in rows]
    model.train()
    pairs = sum(len(a.pairs) for a, _ in chosen)
    total = sum(
        matched_backward(model, r, forks, a, pad, 1 / pairs) for r, (a, _) in zip(rows, chosen, strict=True)
    )
    return total / pairs, chosen


def _optimizer(model: Any, settings: LoopSettings) -> tuple[Any, Any]:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].device.type in ("cpu", "cuda")  # about 6x faster than foreach on the CPU (135M)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0, fused=fused)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: 1 - done / settings.steps)
    return optimizer, decay


def train_loop(
    model: Any,
    rows: list[Encoded],
    forks: Sequence[int],
    tokens: Sequence[str],
    settings: LoopSettings,
    pad: int,
    report: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Train for settings.steps optimizer steps; the log of every step."""
    import torch

    optimizer, decay = _optimizer(model, settings)
    order, history, seen = batches(len(rows), settings.batch_size, settings.seed), [], []
    every = max(1, settings.steps // 10)
    for number in range(1, settings.steps + 1):
        if STOPPING.is_set():
            raise Interrupted("interrupted: training stopped; no checkpoint was written")
        elapsed, batch, rate = timer(), [rows[i] for i in next(order)], decay.get_last_lr()[0]
        loss, chosen = step(model, batch, forks, settings.rule, pad)
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM))
        optimizer.step()
        decay.step()
        optimizer.zero_grad(set_to_none=True)
        seen += [a for a, _ in chosen]
        usage = fork_usage(seen, len(forks))
        history.append({
            "step": number, "loss": loss, "learning_rate": rate, "grad_norm": norm, "seconds": elapsed(),
            "assignments": [matched(r, a, tokens, m) for r, (a, m) in zip(batch, chosen, strict=True)],
            "fork_usage": usage, "usage_share": usage_share(usage),
        })  # fmt: skip
        if number == 1 or number % every == 0:
            report(f"step {number}/{settings.steps}: loss {loss:.4f}, fork usage {usage}")
    return history


def set_loss(model: Any, rows: list[Encoded], forks: Sequence[int], rule: str, pad: int) -> float:
    """The mean loss over the pairs the rule assigns (the matching, or the fixed pairs), without gradients."""
    model.eval()
    values = []
    for row in rows:
        matrix = loss_matrix(model, row, forks, pad)
        assignment = match(matrix) if rule == "match" else fixed(len(forks), len(row.traces))
        values += [float(matrix[i, j]) for i, j in assignment.pairs]
    return sum(values) / len(values)


def matchings(model: Any, rows: list[Encoded], forks: Sequence[int], pad: int) -> list[Assignment]:
    """The least-loss matching of every prompt, without gradients."""
    model.eval()
    return [match(loss_matrix(model, row, forks, pad)) for row in rows]
