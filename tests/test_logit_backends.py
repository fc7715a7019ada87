"""The two LogitModel backends (aidsafe.logits_llama, aidsafe.logits_hf) on the embedded SmolLM2-135M: the
cached sessions give the numbers a fresh evaluation gives, and the two backends agree with each other."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aidsafe.embedded import locate_model
from aidsafe.errors import ConfigError, ModelError
from aidsafe.logits import LogitModel, LogitSession, LogProbs

PROMPTS = (
    "Question: Is it safe to mix bleach and ammonia?\nAnswer: no\nRationale:",
    "Question: Can I leave a candle burning overnight?\nAnswer: no\nRationale:",
    "Question: Is it fine to wash my hands with soap?\nAnswer: yes\nRationale:",
)
FEW_SHOT = "Question: Is water wet?\nAnswer: yes\nRationale: Water makes things wet.\n\n"
TEXT = "Plain text, with   spaces,\nnewlines, ünïcödé — 安全 and emoji 🙂."
TOLERANCE = 1e-3


def greedy(session: LogitSession, steps: int) -> tuple[list[list[int]], list[list[LogProbs]]]:
    """Advance every context by its argmax token; the tokens and the log-probs seen at each step."""
    tokens: list[list[int]] = [[] for _ in session.logprobs]
    seen: list[list[LogProbs]] = [[] for _ in session.logprobs]
    for _ in range(steps):
        chosen = [int(np.argmax(lp)) for lp in session.logprobs]
        for i, (token, lp) in enumerate(zip(chosen, session.logprobs, strict=True)):
            tokens[i].append(token)
            seen[i].append(lp)
        session.advance(chosen)
    return tokens, seen


def logprobs_of(model: LogitModel, contexts: Sequence[Sequence[int]]) -> list[LogProbs]:
    session = model.open(contexts)
    try:
        return session.logprobs
    finally:
        session.close()


def assert_close(actual: Sequence[LogProbs], expected: Sequence[LogProbs]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, atol=TOLERANCE, rtol=0)


def fresh_llama_logprobs(contexts: Sequence[Sequence[int]]) -> list[LogProbs]:
    """The numbers of a model with an empty cache (nothing kept from another session)."""
    from aidsafe.logits_llama import LlamaLogitModel

    with LlamaLogitModel(locate_model()) as model:
        return logprobs_of(model, contexts)


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every llama_decode call (until monkeypatch.undo)."""
    import aidsafe.logits_llama as backend

    sizes: list[int] = []
    decode = backend.llama.llama_decode

    def counting(context: Any, batch: Any) -> int:
        sizes.append(batch.n_tokens)
        return int(decode(context, batch))

    monkeypatch.setattr(backend.llama, "llama_decode", counting)
    return sizes


# -- errors without a model ---------------------------------------------------------------------------------


def test_a_missing_gguf_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from aidsafe.logits_llama import LlamaLogitModel

    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(ConfigError, match=str(missing)):
        LlamaLogitModel(missing)


def test_a_file_that_is_not_a_gguf_model_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from aidsafe.logits_llama import LlamaLogitModel

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ConfigError, match=str(junk)):
        LlamaLogitModel(junk)


def test_a_missing_checkpoint_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from aidsafe.logits_hf import HFLogitModel

    with pytest.raises(ConfigError, match=str(tmp_path / "nowhere")):
        HFLogitModel(tmp_path / "nowhere")


# -- llama.cpp ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama() -> Iterator[LogitModel]:
    from aidsafe.logits_llama import LlamaLogitModel

    with LlamaLogitModel(locate_model()) as model:
        yield model


@pytest.fixture(scope="module")
def prompts(llama: LogitModel) -> list[list[int]]:
    return [llama.tokenize(p) for p in PROMPTS]


@pytest.mark.e2e
def test_llama_logprobs_after_advance_equal_a_fresh_session_over_the_extended_contexts(
    llama: LogitModel, prompts: list[list[int]]
) -> None:
    """Fails if the KV cache of the advanced sequences is wrong (positions, sequence ids, shared cells)."""
    contexts = prompts[:2]
    session = llama.open(contexts)
    generated, _ = greedy(session, 6)
    after = session.logprobs
    session.close()
    extended = [c + g for c, g in zip(contexts, generated, strict=True)]
    assert_close(after, fresh_llama_logprobs(extended))


@pytest.mark.e2e
def test_llama_logprobs_sum_to_one(llama: LogitModel, prompts: list[list[int]]) -> None:
    """Fails if the log-softmax is wrong or the logits are read from the wrong place."""
    session = llama.open(prompts)
    _, seen = greedy(session, 3)
    session.close()
    for lp in (x for context in seen for x in context):
        assert lp.dtype == np.float32 and lp.shape == seen[0][0].shape
        assert abs(np.logaddexp.reduce(lp.astype(np.float64))) < 1e-4


@pytest.mark.e2e
def test_llama_two_contexts_with_a_common_prefix_equal_two_single_sessions(
    llama: LogitModel,
) -> None:
    """Fails if the prefix shared by seq_cp is not what each context would have evaluated itself."""
    true, perturbed = (llama.tokenize(FEW_SHOT + p) for p in PROMPTS[:2])
    together = logprobs_of(llama, [true, perturbed])
    assert_close(together, [fresh_llama_logprobs([true])[0], fresh_llama_logprobs([perturbed])[0]])


@pytest.mark.e2e
def test_llama_prefix_kept_from_the_last_session_is_reused_and_gives_the_same_numbers(
    llama: LogitModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails if the diverging part of the last session is left in the cache, or the prefix is re-evaluated."""
    first = [llama.tokenize(FEW_SHOT + p) for p in PROMPTS[:2]]
    session = llama.open(first)
    greedy(session, 4)
    session.close()
    evaluated = count_decodes(monkeypatch)
    second = [llama.tokenize(FEW_SHOT + p) for p in PROMPTS[1:]]  # same few-shot prefix, other questions
    kept = logprobs_of(llama, second)
    monkeypatch.undo()
    assert_close(kept, fresh_llama_logprobs(second))
    assert sum(evaluated) < sum(len(c) for c in second) - len(llama.tokenize(FEW_SHOT))


@pytest.mark.e2e
def test_llama_advance_is_one_decode_call_of_one_token_per_context(
    llama: LogitModel, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails if advance evaluates the contexts one by one (or re-evaluates anything)."""
    session = llama.open(prompts)
    calls = count_decodes(monkeypatch)
    session.advance([int(np.argmax(lp)) for lp in session.logprobs])
    session.close()
    assert calls == [len(prompts)]


@pytest.mark.e2e
def test_llama_context_overflow_is_a_model_error() -> None:
    """Fails if a context longer than n_ctx is silently truncated, or crashes llama.cpp."""
    from aidsafe.logits_llama import LlamaLogitModel

    with LlamaLogitModel(locate_model(), n_ctx=32) as small:
        with pytest.raises(ModelError, match="exceeds the context size 32"):
            small.open([[1] * 33])
        session = small.open([[1] * 31, [1] * 20])
        session.advance([1, 1])
        with pytest.raises(ModelError, match="context size 32"):
            session.advance([1, 1])
        session.close()
        assert len(logprobs_of(small, [[1] * 32])) == 1  # the model is still usable


@pytest.mark.e2e
def test_llama_tokenize_detokenize_round_trip_plain_text(llama: LogitModel) -> None:
    """Fails if a BOS is added, special tokens are parsed, or pieces are decoded one by one."""
    tokens = llama.tokenize(TEXT)
    assert llama.detokenize(tokens) == TEXT
    assert llama.tokenize("<|im_end|>") != [2]  # special tokens are text in a prompt file
    assert llama.tokenize("") == []  # no BOS
    assert llama.end_tokens and all(t >= 0 for t in llama.end_tokens)
    assert llama.name == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.e2e
def test_llama_session_opened_by_the_same_thread_closes_the_open_one(llama: LogitModel) -> None:
    """Fails if the thread would deadlock on its own session, or the old session could still advance."""
    first = llama.open([[1, 2, 3]])
    second = llama.open([[1, 2, 4]])  # the same thread: the first session is closed, not waited for
    with pytest.raises(ModelError, match="closed"):
        first.advance([5])
    second.advance([5])
    second.close()


# -- transformers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogitModel]:
    """The embedded model converted once (about half a minute) into this module's cache, loaded once."""
    from aidsafe.hf import embedded_checkpoint
    from aidsafe.logits_hf import HFLogitModel

    with HFLogitModel(embedded_checkpoint(tmp_path_factory.mktemp("cache"), locate_model())) as model:
        yield model


def fresh_hf_logprobs(model: LogitModel, contexts: Sequence[Sequence[int]]) -> list[LogProbs]:
    """Every context on its own with the kept prefix dropped first (evaluated from scratch)."""
    from aidsafe.logits_hf import HFLogitModel

    assert isinstance(model, HFLogitModel)
    out = []
    for context in contexts:
        model.close()
        out.extend(logprobs_of(model, [context]))
    return out


@pytest.mark.e2e
def test_hf_logprobs_after_advance_sum_to_one_and_equal_a_fresh_session(
    hf: LogitModel,
) -> None:
    """Fails if a context's DynamicCache is shared or advanced wrongly."""
    contexts = [hf.tokenize(p) for p in PROMPTS[:2]]
    session = hf.open(contexts)
    generated, seen = greedy(session, 6)
    after = session.logprobs
    session.close()
    for lp in (x for context in seen for x in context):
        assert abs(np.logaddexp.reduce(lp.astype(np.float64))) < 1e-4
    extended = [c + g for c, g in zip(contexts, generated, strict=True)]
    assert_close(after, fresh_hf_logprobs(hf, extended))


@pytest.mark.e2e
def test_hf_two_contexts_and_a_kept_prefix_equal_single_sessions(hf: LogitModel) -> None:
    """Fails if the deep-copied prefix cache or the cropped kept prefix is wrong."""
    first = [hf.tokenize(FEW_SHOT + p) for p in PROMPTS[:2]]
    assert_close(logprobs_of(hf, first), fresh_hf_logprobs(hf, first))
    logprobs_of(hf, first)
    second = [hf.tokenize(FEW_SHOT + p) for p in PROMPTS[1:]]  # the few-shot prefix kept from `first`
    assert_close(logprobs_of(hf, second), fresh_hf_logprobs(hf, second))


@pytest.mark.e2e
def test_hf_context_overflow_is_a_model_error(hf: LogitModel) -> None:
    with pytest.raises(ModelError, match="exceeds the context size"):
        hf.open([[1] * (hf.context_size + 1)])


@pytest.mark.e2e
def test_hf_tokenize_detokenize_round_trip_plain_text(hf: LogitModel) -> None:
    assert hf.detokenize(hf.tokenize(TEXT)) == TEXT
    assert hf.tokenize("") == [] and 2 in hf.end_tokens  # no BOS; <|im_end|> ends a turn
    assert hf.tokenize("<|im_end|>") != [2]


# -- both ---------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_backends_tokenize_the_prompts_alike(llama: LogitModel, hf: LogitModel) -> None:
    """Fails if the GGUF's tokenizer and the converted checkpoint's differ."""
    for text in (*PROMPTS, FEW_SHOT, TEXT):
        assert llama.tokenize(text) == hf.tokenize(text)


@pytest.mark.e2e
def test_the_backends_agree_on_greedy_tokens_where_llama_is_sure(
    llama: LogitModel, hf: LogitModel, prompts: list[list[int]]
) -> None:
    """Fails if the backends choose different tokens for the same context. Both follow llama's greedy tokens
    (so one near-tie cannot derail the rest); the Q4_1 GGUF and its dequantised float32 copy may differ at a
    near-tie, so the steps compared are those where llama's top-2 gap is at least 0.5 nats."""
    steps, compared = 12, 0
    for prompt in prompts:
        session = llama.open([prompt])
        (by_llama,), (seen,) = greedy(session, steps)
        session.close()
        session = hf.open([prompt])
        by_hf = []
        for token in by_llama:
            by_hf.append(int(np.argmax(session.logprobs[0])))
            session.advance([token])
        session.close()
        gaps = [float(np.diff(np.sort(lp)[-2:])[0]) for lp in seen]
        sure = [i for i, gap in enumerate(gaps) if gap >= 0.5]
        assert [by_hf[i] for i in sure] == [by_llama[i] for i in sure], (by_llama, by_hf, gaps)
        compared += len(sure)
    assert compared >= steps  # most steps are not near-ties
