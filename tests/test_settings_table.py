"""The settings table: every knob from every source, precedence CLI > config file > environment > default."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from aidsafe import config as config_module
from aidsafe.config import (
    ENDPOINT_KNOBS,
    KNOBS,
    Knob,
    Options,
    Settings,
    add_setting_arguments,
    load_settings,
    options_from_args,
)
from aidsafe.errors import ConfigError

STAGES = ("generate", "refine", "grade", "baseline", "dpo", "rationales", "traces", "eval")
# Every role on a remote endpoint, and the variables the api_key_env samples name.
BASE_ENV = {
    "OPENAI_BASE_URL": "http://base.example/v1",
    "AIDSAFE_MODEL": "base-model",
    "KEY_ENV": "k-env",
    "KEY_FILE": "k-file",
    "KEY_CLI": "k-cli",
}
# Per knob (by config key): a valid value from the environment, the config file and the CLI (or Options).
SAMPLES: dict[str, tuple[Any, Any, Any]] = {
    "agents": (3, 4, 5),
    "max_rounds": (6, 7, 8),
    "deliberation_end": ("any", "all", "any"),
    "concurrency": (9, 10, 11),
    "workers": (1, 2, 3),
    "task_runner": ("dask", "ray", "threads"),
    "scheduler_address": ("tcp://env:8786", "tcp://file:8786", "ray://cli:10001"),
    "grader_samples": (2, 3, 5),
    "dpo_attempts": (4, 5, 6),
    "dpo_max_score": (1, 3, 4),
    "dpo_margin": (1, 3, 4),
    "dpo_whisper_retries": (0, 1, 3),
    "max_prompt_chars": (5000, 6000, 7000),
    "partition_retries": (0, 1, 3),
    "partition_retry_delay": (0.5, 1.5, 2.5),
    "checkpoint_rows": (100, 200, 300),
    "checkpoint_seconds": (5.0, 10.0, 30.0),
    "policies": (Path("/env/policies"), Path("/file/policies"), Path("/cli/policies")),
    "prompts": (Path("/env/prompts"), Path("/file/prompts"), Path("/cli/prompts")),
    "cache_dir": (Path("/env/cache"), Path("/file/cache"), Path("/cli/cache")),
    "context_tokens": (8192, 16384, 65536),
    "max_failed_fraction": (0.2, 0.3, 0.5),
    "base_url": ("http://env.example/v1", "http://file.example/v1", "http://cli.example/v1"),
    "model": ("model-env", "model-file", "model-cli"),
    "api_key_env": ("KEY_ENV", "KEY_FILE", "KEY_CLI"),
    "api_key_block": ("block-env", "block-file", "block-cli"),
    "max_tokens": (100, 200, 300),
    "max_tokens_field": ("max_completion_tokens", "max_tokens", "max_completion_tokens"),
    "temperature": (0.5, 0.7, 0.9),
    "timeout": (10.0, 20.0, 30.0),
    "max_retries": (0, 1, 3),
    "structured_retries": (0, 1, 3),
    "max_in_flight": (8, 16, 32),
    "focus": ("helpfulness", "policy_coverage", "helpfulness"),
    "rationale_backend": ("transformers", "llama", "transformers"),
    "rationale_model": (Path("/env/teacher.gguf"), Path("/file/teacher.gguf"), Path("/cli/teacher.gguf")),
    "rationale_answer": ("answer", "response", "decision"),
    "rationale_decoding": ("greedy", "contrastive", "greedy"),
    "rationale_perturbation": ("empty", "opposite", "empty"),
    "rationale_weight": (0.5, 2.0, 0.0),
    "rationale_plausible": ("top_k", "top_p", "alpha"),
    "rationale_plausible_value": (5.0, 0.9, 0.2),
    "rationale_max_tokens": (16, 32, 64),
    "rationale_seed": (1, 2, 3),
    "trace_configs": (Path("/env/traces.toml"), Path("/file/traces.toml"), Path("/cli/traces.toml")),
    "trace_count": (2, 3, 4),
    "eval_forks": (1, 2, 3),
}


def knob_id(knob: Knob) -> str:
    return knob.key


@pytest.fixture(autouse=True)
def fake_secret_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "_secret_block", lambda name: f"sk-{name}")


def resolved(settings: Settings, knob: Knob) -> Any:
    """The knob's value in the settings; an endpoint knob must have one value for every role."""
    if not knob.endpoint:
        return getattr(settings, knob.name)
    values = {getattr(endpoint, knob.name) for endpoint in settings.roles.values()}
    assert len(values) == 1, values
    return values.pop()


def write_config(tmp_path: Path, knob: Knob, value: Any) -> Path:
    literal = json.dumps(str(value)) if isinstance(value, str | Path) else repr(value)
    path = tmp_path / "aidsafe.toml"
    path.write_text(("[endpoint]\n" if knob.endpoint else "") + f"{knob.key} = {literal}\n", encoding="utf-8")
    return path


def parser(stages: tuple[str, ...] = STAGES) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_setting_arguments(p, stages)
    return p


def explicit(knob: Knob, value: Any, config: Path | None = None) -> Options:
    """The value given on the command line, or as an Options field for a knob without a flag."""
    if knob.flag is None:
        return Options(config=config, **{knob.key: value})
    argv = [knob.flag, str(value), *(["--config", str(config)] if config else [])]
    return options_from_args(parser().parse_args(argv))


def test_the_samples_cover_the_table() -> None:
    assert set(SAMPLES) == {k.key for k in KNOBS}


@pytest.mark.parametrize("knob", KNOBS, ids=knob_id)
def test_each_source_beats_the_ones_below(knob: Knob, tmp_path: Path) -> None:
    from_env, from_file, from_cli = SAMPLES[knob.key]
    assert knob.default != from_env != from_file != from_cli  # every step can fail
    assert knob.env is not None
    env = {**BASE_ENV, knob.env: str(from_env)}
    assert resolved(load_settings(None, env=env), knob) == from_env
    path = write_config(tmp_path, knob, from_file)
    assert resolved(load_settings(path, env=env), knob) == from_file
    assert resolved(explicit(knob, from_cli, path).load(env=env), knob) == from_cli


def test_nothing_set_gives_the_declared_defaults_of_the_embedded_model() -> None:
    settings = load_settings(None, env={})
    assert settings.uses_embedded
    for knob in KNOBS:
        assert resolved(settings, knob) == knob.default_for(settings.embedded), knob.key


def test_a_remote_endpoint_gives_the_declared_defaults() -> None:
    settings = load_settings(None, env={"OPENAI_BASE_URL": "http://h.example/v1", "AIDSAFE_MODEL": "m"})
    for knob in KNOBS:
        if knob.key not in ("base_url", "model"):
            assert resolved(settings, knob) == knob.default_for(None), knob.key


def outside(knob: Knob) -> list[Any]:
    """Values just beyond each bound, of the knob's type."""
    kind = type(knob.default)
    step = {"ge": -1, "gt": 0, "le": 1, "lt": 0}
    return [kind(bound + step[name]) for name, bound in knob.bounds.items()]


BOUNDED = [k for k in KNOBS if k.bounds]


def test_every_numeric_knob_has_bounds() -> None:
    numeric = {k.key for k in KNOBS if type(k.default) in (int, float)}
    assert numeric == {k.key for k in BOUNDED}


@pytest.mark.parametrize("knob", BOUNDED, ids=knob_id)
def test_out_of_bounds_values_are_config_errors_naming_the_source(knob: Knob, tmp_path: Path) -> None:
    for bad in outside(knob):
        with pytest.raises(ConfigError, match=rf"^environment {knob.env}: must be"):
            load_settings(None, env={**BASE_ENV, str(knob.env): str(bad)})
        path = write_config(tmp_path, knob, bad)
        with pytest.raises(ConfigError, match=rf"{knob.key}: must be") as info:
            load_settings(path, env=BASE_ENV)
        assert str(info.value).startswith(f"{path}: ")
        source = f"{knob.flag} {bad}" if knob.flag else f"option {knob.key}"
        with pytest.raises(ConfigError, match=rf"^{source}: must be"):
            explicit(knob, bad)


@pytest.mark.parametrize("knob", BOUNDED, ids=knob_id)
def test_values_on_the_bounds_are_accepted_from_every_source(knob: Knob, tmp_path: Path) -> None:
    for name, bound in knob.bounds.items():
        if name in ("gt", "lt"):
            continue
        value = type(knob.default)(bound)
        assert resolved(load_settings(None, env={**BASE_ENV, str(knob.env): str(value)}), knob) == value
        assert resolved(load_settings(write_config(tmp_path, knob, value), env=BASE_ENV), knob) == value
        assert resolved(explicit(knob, value).load(env=BASE_ENV), knob) == value


def test_every_knob_has_help_text_with_its_default() -> None:
    for knob in KNOBS:
        assert knob.info.description, knob.key
        if knob.default is not None:
            assert "(default " in knob.help, knob.key


def test_flags_environment_variables_and_keys_are_unique() -> None:
    flags = [k.flag for k in KNOBS if k.flag]
    envs = [k.env for k in KNOBS if k.env]
    keys = [k.key for k in KNOBS] + ["config", "endpoint", "roles", "embedded"]
    assert len(flags) == len(set(flags)) and len(envs) == len(set(envs)) and len(keys) == len(set(keys))


def test_environment_variables_are_aidsafe_names_but_openai_base_url() -> None:
    names = {k.key: k.env for k in KNOBS}
    assert names.pop("base_url") == "OPENAI_BASE_URL"
    assert names == {key: f"AIDSAFE_{key.upper()}" for key in names}


def test_no_flag_takes_an_api_key() -> None:
    help_text = parser().format_help()
    assert "api-key" not in help_text and "api_key" not in help_text
    assert [k.key for k in ENDPOINT_KNOBS if k.secret_like] == ["api_key_env", "api_key_block"]


def test_flags_take_strings_and_bad_ones_are_config_errors() -> None:
    p = parser()
    assert all(action.type is None for action in p._actions)
    args = p.parse_args(["--concurrency", "many"])  # no argparse error: the model validates
    with pytest.raises(ConfigError, match=r"^--concurrency many: .*integer"):
        options_from_args(args)


def test_stage_flags_appear_only_for_their_stages() -> None:
    for knob in KNOBS:
        if knob.flag and knob.stages:
            assert knob.flag not in parser(("generate",)).format_help()
            assert knob.flag in parser(knob.stages).format_help()
    assert {k.flag for k in KNOBS if k.stages} == {
        "--attempts", "--max-policy-score", "--min-margin", "--whisper-retries",
        "--grader-samples", "--backend", "--teacher", "--answer", "--decoding", "--perturbation",
        "--contrast-weight", "--plausible", "--plausible-value", "--rationale-tokens",
        "--rationale-seed", "--trace-configs", "--traces", "--forks"}  # fmt: skip


def test_missing_namespace_attributes_are_not_given() -> None:
    assert options_from_args(argparse.Namespace()) == Options()
    assert options_from_args(argparse.Namespace(max_rounds=None, config="c.toml")) == Options(
        config=Path("c.toml")
    )
