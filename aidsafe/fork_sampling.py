"""One greedy answer per forking token of an SSFT checkpoint, and how different those answers are.

Each answer starts from the text it was trained after (aidsafe.fork_tokens.forked_prompt_ids: the chat
template's generation prompt, then the forking token) and is decoded greedily, so the forks of a prompt
differ only by what their token has learnt. Their diversity is the mean pairwise 1 - Jaccard of the
answers' normalised word trigrams (aidsafe.trace_dedup), as for the traces of a set export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from aidsafe.errors import ConfigError
from aidsafe.fork_tokens import forked_prompt_ids
from aidsafe.ssft_card import FORKS_NAME
from aidsafe.trace_dedup import jaccard, ngrams
from aidsafe.train_run import timer


@dataclass(frozen=True)
class Fork:
    token: str
    text: str
    seconds: float


def checkpoint_forks(checkpoint: Path) -> list[str]:
    """The forking tokens of an SSFT checkpoint, from its forks.json."""
    path = checkpoint / FORKS_NAME
    if not path.is_file():
        raise ConfigError(
            f"{checkpoint}: not an SSFT checkpoint (no {FORKS_NAME}): train one with `aidsafe train ssft`"
        )
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))["tokens"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a forks file ({exc})") from None
    return [str(t) for t in tokens]


def _chosen(tokens: list[str], forks: int | None, checkpoint: Path) -> list[str]:
    if forks is None:
        return tokens
    if not 1 <= forks <= len(tokens):
        raise ConfigError(
            f"--forks {forks}: {checkpoint} has {len(tokens)} forking tokens (1 to {len(tokens)})"
        )
    return tokens[:forks]


def _generate(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int) -> str:
    import torch

    device = next(model.parameters()).device
    inputs = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        output = model.generate(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    return str(tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True))


def sample_forks(
    checkpoint: Path, prompt: str, forks: int | None = None, max_new_tokens: int = 256
) -> list[Fork]:
    """One greedy answer per forking token (the first `forks` of them; None: all)."""
    from aidsafe.hf import load_causal_lm

    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: at least 1")
    tokens = _chosen(checkpoint_forks(checkpoint), forks, checkpoint)
    model, tokenizer = load_causal_lm(checkpoint)
    answers = []
    for token in tokens:
        elapsed = timer()
        text = _generate(model, tokenizer, forked_prompt_ids(tokenizer, prompt, token), max_new_tokens)
        answers.append(Fork(token, text, elapsed()))
    return answers


def fork_diversity(texts: list[str]) -> float | None:
    """Mean pairwise 1 - Jaccard of the texts' word trigrams (None: fewer than two texts)."""
    grams = [ngrams(t) for t in texts]
    pairs = [1.0 - jaccard(a, b) for a, b in combinations(grams, 2)]
    return sum(pairs) / len(pairs) if pairs else None
