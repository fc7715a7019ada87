"""The models `aidsafe eval` evaluates: `--target NAME=SPEC`, each resolved into the endpoint of role
`target`.

SPEC is one of:
- `embedded`: the embedded SmolLM2-135M on its llama.cpp server (the default target, named `base`);
- `http(s)://HOST/v1` or `http(s)://HOST/v1#MODEL`: an OpenAI-compatible server (the model it serves
  when it serves exactly one, else the one after `#`); the API key as for every role (OPENAI_API_KEY);
- `hf:PATH`: a local transformers checkpoint directory (e.g. one `aidsafe train` wrote), answered in this
  process; `hf:embedded` is the embedded SmolLM2 converted from its GGUF (the base of `aidsafe train`, so
  that a base and its fine-tuned checkpoints are compared on the same runtime).
Targets answer at temperature 0 (greedy), so an evaluation is repeatable; their other endpoint settings
(max_tokens, timeout, retries) are those of role `target` ([roles.target] in the config, or the options).
A local checkpoint's model name carries a hash of its weights: retraining into the same directory makes
its answers stale, not reused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from pydantic import SecretStr

from aidsafe.config import LOCAL_SCHEME, Endpoint, Settings, endpoint_for
from aidsafe.errors import ConfigError

DEFAULT_TARGET = "base=embedded"
EMBEDDED = "embedded"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Target:
    """One evaluated model: the name of its column in the report and where it answers."""

    name: str
    spec: str

    @property
    def local(self) -> bool:
        return self.spec.startswith(LOCAL_SCHEME)


def parse_target(text: str) -> Target:
    """`NAME=SPEC` (see the module docstring), checked."""
    name, sep, spec = text.partition("=")
    if not sep or not spec:
        raise ConfigError(f"--target {text!r}: expected NAME=BASE_URL, NAME=hf:PATH or NAME=embedded")
    if not _NAME.match(name):
        raise ConfigError(f"--target {text!r}: the name must be letters, digits, '.', '_' or '-'")
    if not (spec == EMBEDDED or spec.startswith(LOCAL_SCHEME) or re.match(r"^https?://", spec)):
        raise ConfigError(f"--target {name}: {spec!r} is not an http(s) URL, hf:PATH or embedded")
    return Target(name, spec)


def parse_targets(items: list[str]) -> list[Target]:
    """The targets in order (none: the embedded model as `base`); names must differ."""
    targets = [parse_target(item) for item in items or [DEFAULT_TARGET]]
    names = [t.name for t in targets]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"--target: the name {duplicate!r} is given twice")
    return targets


def weights_hash(path: Path) -> str:
    """sha256 of a checkpoint's weights file (the first 12 hex digits)."""
    weights = next((path / name for name in WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise ConfigError(f"{path}: no {' or '.join(WEIGHTS)}: not a checkpoint `aidsafe eval` can load")
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def checkpoint_path(target: Target, settings: Settings) -> Path:
    """The checkpoint directory of a local target (`hf:embedded`: converted on first use, cached)."""
    raw = target.spec.removeprefix(LOCAL_SCHEME)
    if raw == EMBEDDED:
        from aidsafe.embedded import locate_model
        from aidsafe.hf import embedded_checkpoint

        return embedded_checkpoint(settings.cache_dir, settings.embedded.model_path or locate_model())
    path = Path(raw).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--target {target.name}: {path} is not a transformers checkpoint (no config.json)")
    return path


def served_model(base_url: str, api_key: str) -> str:
    """The one model an OpenAI-compatible server serves (else an error listing them)."""
    try:
        models = [
            m.id for m in openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=1).models.list()
        ]
    except openai.APIError as exc:
        raise ConfigError(f"{base_url}: cannot list its models ({type(exc).__name__}); add #MODEL") from None
    if len(models) != 1:
        raise ConfigError(f"{base_url} serves {len(models)} models ({', '.join(models[:10])}): add #MODEL")
    return models[0]


def target_endpoint(target: Target, settings: Settings) -> Endpoint:
    """The endpoint of role `target` for one target, at temperature 0."""
    configured = settings.roles["target"]
    knobs: dict[str, Any] = {"temperature": 0.0, "max_tokens": configured.max_tokens}
    knobs |= {"timeout": configured.timeout, "max_retries": configured.max_retries}
    if target.spec == EMBEDDED:
        return endpoint_for("target", None, None, **knobs)
    if target.local:
        path = checkpoint_path(target, settings)
        name = f"{path.name}@{weights_hash(path)}"
        return Endpoint(base_url=f"{LOCAL_SCHEME}{path}", model=name, api_key=SecretStr("local"), **knobs)
    base_url, _, model = target.spec.partition("#")
    keyed = endpoint_for("target", base_url, model or "unknown", **knobs)
    return (
        keyed
        if model
        else keyed.model_copy(update={"model": served_model(base_url, keyed.api_key.get_secret_value())})
    )
