"""The K x M loss matrix of one prompt and the loss of its matched (forking token, trace) pairs, in torch.

An entry is the mean token NLL of trace j after forking token i (the sequence NLL over its length): the
scale of an SFT loss, and a matching with M > K does not drop the longest traces just for being long. The
matrix is computed without gradients (one batched forward of the K x M sequences); only the matched pairs
are then run again with gradients, so nothing reaches an unmatched pair. That costs K*M forwards plus
min(K, M) forward-backward passes per prompt, against K*M forward-backward passes for building the whole
matrix under grad and selecting the matched entries: measured on SmolLM2-135M, 1 CPU thread, K = 4, M = 3,
64-token sequences, 5.2 s against 7.5 s per prompt (1.45x; the gap grows with K*M / min(K, M)).

Every sequence of a prompt has the same prefix length (the templated prompt and one forking token), so the
logits are kept for the trace positions only (`logits_to_keep`), right padding after them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aidsafe.fork_tokens import IGNORE
from aidsafe.forks import Assignment, fixed, match

MAX_TOKENS = 8192  # tokens of one forward pass (the sequences of a prompt are split into such chunks)


@dataclass(frozen=True)
class Encoded:
    """One prompt in token ids: the templated prompt (no forking token) and each trace (eos last)."""

    id: str
    prompt: list[int]
    traces: list[list[int]]
    configurations: list[str]


def _chunks(pairs: Sequence[tuple[int, int]], length: int) -> Iterator[list[tuple[int, int]]]:
    size = max(1, MAX_TOKENS // max(1, length))
    for start in range(0, len(pairs), size):
        yield list(pairs[start : start + size])


def pair_batch(row: Encoded, forks: Sequence[int], pairs: Sequence[tuple[int, int]], pad: int) -> Any:
    """(input ids, attention mask, labels) of (forking token i, trace j) pairs, right-padded."""
    import torch

    width = len(row.prompt) + 1 + max(len(row.traces[j]) for _, j in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    start = len(row.prompt) + 1
    for n, (i, j) in enumerate(pairs):
        trace = torch.tensor(row.traces[j], dtype=torch.long)
        ids[n, : start - 1] = torch.tensor(row.prompt, dtype=torch.long)
        ids[n, start - 1] = forks[i]
        ids[n, start : start + len(trace)] = trace
        labels[n, start : start + len(trace)] = trace
        mask[n, : start + len(trace)] = 1
    return ids, mask, labels


def sequence_losses(model: Any, ids: Any, mask: Any, labels: Any, start: int) -> Any:
    """The mean token NLL of each sequence over its labelled positions (all at or after `start`)."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    keep = ids.shape[1] - start + 1  # the positions that predict start .. end
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, :-1]
    targets = labels[:, start:]
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return nll.sum(dim=1) / (targets != IGNORE).sum(dim=1).clamp(min=1)


def loss_matrix(model: Any, row: Encoded, forks: Sequence[int], pad: int) -> np.ndarray:
    """The K x M matrix of one prompt, without gradients."""
    import torch

    pairs = [(i, j) for i in range(len(forks)) for j in range(len(row.traces))]
    length = len(row.prompt) + 1 + max(len(t) for t in row.traces)
    values = []
    with torch.no_grad():
        for chunk in _chunks(pairs, length):
            ids, mask, labels = pair_batch(row, forks, chunk, pad)
            values.append(sequence_losses(model, ids, mask, labels, len(row.prompt) + 1).cpu())
    return torch.cat(values).view(len(forks), len(row.traces)).double().numpy()


def assign(rule: str, model: Any, row: Encoded, forks: Sequence[int], pad: int) -> tuple[Assignment, Any]:
    """The pairs to train (the least-loss matching, or the fixed baseline) and the matrix (None if fixed)."""
    if rule == "fixed":
        return fixed(len(forks), len(row.traces)), None
    matrix = loss_matrix(model, row, forks, pad)
    return match(matrix), matrix


def matched_backward(model: Any, row: Encoded, forks: Sequence[int], assignment: Assignment, pad: int,
                     scale: float) -> float:  # fmt: skip
    """Backward of scale x the sum of the matched pairs' losses (only they are run with gradients);
    returns that sum."""
    length = len(row.prompt) + 1 + max(len(row.traces[j]) for _, j in assignment.pairs)
    total = 0.0
    for chunk in _chunks(assignment.pairs, length):
        ids, mask, labels = pair_batch(row, forks, chunk, pad)
        losses = sequence_losses(model, ids, mask, labels, len(row.prompt) + 1)
        (losses.sum() * scale).backward()
        total += float(losses.detach().sum())
    return total
