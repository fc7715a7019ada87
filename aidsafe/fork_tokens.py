"""The forking tokens `<think1>` ... `<thinkK>` and the text a (forking token, trace) pair is trained as.

One format, for training and sampling alike: the base tokenizer's chat template over [user: prompt] with the
generation prompt, then the forking token, then `<think>\\n{cot}\\n</think>\\n\\n{response}` and the end of
turn (eos). Sampling is the same ids up to and including the forking token, then greedy generation. The loss
is over the trace tokens only (the prompt and the forking token are masked with IGNORE).

The tokens are added to the tokenizer as special tokens once: a base that already has them (an earlier SSFT
checkpoint) keeps them; one with a different number is refused. Their new embedding rows (input, and output
if untied) start as the mean of the existing rows: every fork starts alike, and the matching separates them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aidsafe.errors import ConfigError

IGNORE = -100  # the label of a position without loss
_FORK = re.compile(r"^<think(\d+)>$")


def fork_tokens(k: int) -> list[str]:
    return [f"<think{i}>" for i in range(1, k + 1)]


def trace_text(cot: str, response: str) -> str:
    """What the model learns to write after a forking token (the eos follows)."""
    return f"<think>\n{cot}\n</think>\n\n{response}"


def existing_forks(tokenizer: Any) -> list[str]:
    """The forking tokens a tokenizer already has, in order (none: a plain base)."""
    found = sorted((int(m.group(1)), t) for t in tokenizer.get_added_vocab() if (m := _FORK.match(t)))
    return [t for _, t in found]


def check_forks(tokenizer: Any, k: int) -> bool:
    """Whether the tokenizer already has exactly `<think1>` ... `<thinkK>`; a different set is refused."""
    have = existing_forks(tokenizer)
    if not have:
        return False
    if have != fork_tokens(k):
        shown = f"{have[0]} ... {have[-1]}" if len(have) > 1 else have[0]
        raise ConfigError(
            f"the base already has {len(have)} forking tokens ({shown}), not the {k} asked for (--forks "
            f"{k}): train with --forks {len(have)}, or start from a base without forking tokens"
        )
    return True


def add_fork_tokens(model: Any, tokenizer: Any, k: int) -> list[int]:
    """Add the K forking tokens (once), grow the embeddings, start new rows at the mean; their ids."""
    tokens = fork_tokens(k)
    if not check_forks(tokenizer, k):
        tokenizer.add_tokens(tokens, special_tokens=True)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        rows = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(max(rows, len(tokenizer)), mean_resizing=False)
        _mean_rows(model, ids)
    return list(tokenizer.convert_tokens_to_ids(tokens))


def _mean_rows(model: Any, ids: Sequence[int]) -> None:
    import torch

    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():  # untied
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[list(ids)] = False
            weight[list(ids)] = weight[keep].mean(dim=0)


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The chat template over [user: prompt], with the generation prompt, as token ids."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return list(ids)


def forked_prompt_ids(tokenizer: Any, prompt: str, token: str) -> list[int]:
    """What sampling after a forking token starts from: the templated prompt, then the token."""
    return [*prompt_ids(tokenizer, prompt), int(tokenizer.convert_tokens_to_ids(token))]


def trace_ids(tokenizer: Any, cot: str, response: str) -> list[int]:
    """The trace's tokens, the eos last."""
    ids = tokenizer(trace_text(cot, response), add_special_tokens=False)["input_ids"]
    return [*ids, int(tokenizer.eos_token_id)]


def forked_example(
    tokenizer: Any, prompt: str, token: str, cot: str, response: str
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one (forking token, trace) pair: the loss on the trace tokens only."""
    head, tail = forked_prompt_ids(tokenizer, prompt, token), trace_ids(tokenizer, cot, response)
    return [*head, *tail], [IGNORE] * len(head) + tail
