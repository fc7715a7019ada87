"""Local transformers models: the embedded GGUF converted once into a checkpoint, loaded and answering."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidsafe.embedded import locate_model
from aidsafe.errors import ConfigError
from aidsafe.hf import embedded_checkpoint, load_causal_lm


def test_a_directory_without_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a transformers checkpoint"):
        load_causal_lm(tmp_path)


@pytest.mark.e2e
def test_the_embedded_gguf_converts_once_and_answers_greedily(tmp_path: Path) -> None:
    path = embedded_checkpoint(tmp_path, locate_model())
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert embedded_checkpoint(tmp_path, locate_model()) == path and weights.stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dir left
    model, tokenizer = load_causal_lm(path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][inputs["input_ids"].shape[1] :])
