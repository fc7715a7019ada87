"""The recipe of `aidsafe traces`: the K configurations a prompt's traces are made under, and which traces
are kept (policies/traces/default.toml; another file with `--trace-configs`).

A configuration overrides, for its trace only, the review focus of each agent and the temperature, model
name and deliberation budget of the drafter and the agents. Those endpoints become roles of their own,
`drafter@NAME` and `agentN@NAME` (trace_settings): each is built, limited and identified like any role, so
a changed temperature changes the stage's identity, and the agents keep their names in the deliberation log.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aidsafe.config import Settings
from aidsafe.errors import ConfigError
from aidsafe.schemas import METRICS
from aidsafe.thresholds import DEFAULT_THRESHOLDS
from aidsafe.tomlfile import read_model

TRACE_ROLE = "{role}@{name}"  # the role of one configuration's drafter or agent


class TraceConfiguration(BaseModel):
    """One way of making a trace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="names the trace's roles")
    focus: tuple[str, ...] = Field(
        min_length=1, description="review focus ids (PROMPTS/agents/) of agent1, agent2, ... (cycled)"
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="of the drafter and the agents")
    model: str | None = Field(None, min_length=1, description="model name of the drafter and the agents")
    max_rounds: int | None = Field(None, ge=1, le=50, description="deliberation budget (none: the run's)")

    def overrides(self) -> dict[str, Any]:
        values = {"temperature": self.temperature, "model": self.model}
        return {k: v for k, v in values.items() if v is not None}


class TraceRecipe(BaseModel):
    """The configurations, in order, and what makes a trace kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    configuration: tuple[TraceConfiguration, ...] = Field(min_length=1)
    similarity: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard at or above which traces are copies")
    ngram: int = Field(3, ge=1, le=10, description="word n-grams compared")
    min_score: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @field_validator("min_score")
    @classmethod
    def _metrics(cls, value: dict[str, int]) -> dict[str, int]:
        for metric, score in value.items():
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; metrics are {list(METRICS)}")
            if not 1 <= score <= 5:
                raise ValueError(f"{metric}: a minimum score is 1-5, got {score}")
        return value

    @model_validator(mode="after")
    def _unique(self) -> TraceRecipe:
        names = [c.name for c in self.configuration]
        if len(set(names)) != len(names):
            raise ValueError(f"configuration names must be unique, got {names}")
        return self


@cache
def _recipe(path: Path, mtime: float) -> TraceRecipe:
    return read_model(path, TraceRecipe, "trace configurations")


def load_recipe(path: Path) -> TraceRecipe:
    """The recipe file, validated (PolicyError naming it); read again when it changes."""
    if not path.is_file():
        raise ConfigError(f"--trace-configs {path}: no such file")
    return _recipe(path, path.stat().st_mtime)


def configurations(settings: Settings) -> tuple[TraceConfiguration, ...]:
    """The configurations this run uses: the first --traces K of the recipe."""
    listed = load_recipe(settings.trace_configs).configuration
    wanted = settings.trace_count
    if wanted > len(listed):
        raise ConfigError(
            f"--traces {wanted}: {settings.trace_configs} lists only {len(listed)} configuration(s); "
            "set --traces to at most that, or add configurations"
        )
    return listed[:wanted]


def trace_role(role: str, configuration: TraceConfiguration) -> str:
    return TRACE_ROLE.format(role=role, name=configuration.name)


def configured_roles(settings: Settings, configuration: TraceConfiguration) -> dict[str, str]:
    """The graph's role names -> this configuration's roles (the drafter and the agents)."""
    return {role: trace_role(role, configuration) for role in ("drafter", *settings.agent_roles)}


def trace_settings(settings: Settings) -> Settings:
    """The settings with every configuration's drafter and agents as roles of their own (idempotent)."""
    roles = dict(settings.roles)
    for configuration in configurations(settings):
        for role, name in configured_roles(settings, configuration).items():
            roles[name] = settings.roles[role].model_copy(update=configuration.overrides())
    return settings.model_copy(update={"roles": roles})


def agent_focus(settings: Settings, configuration: TraceConfiguration, known: set[str]) -> dict[str, str]:
    """agentN -> its focus in this configuration (the focus list cycled); unknown ids are a ConfigError."""
    for focus in configuration.focus:
        if focus not in known:
            raise ConfigError(
                f"{settings.trace_configs}: configuration {configuration.name}: focus {focus!r} is not the "
                f"id of a review focus file (ids: {', '.join(sorted(known))})"
            )
    cycle = configuration.focus
    return {agent: cycle[n % len(cycle)] for n, agent in enumerate(settings.agent_roles)}


def check_recipe(settings: Settings, known_focus: set[str]) -> Settings:
    """The recipe loads, --traces fits it and every focus exists: the settings with the trace roles."""
    for configuration in configurations(settings):
        agent_focus(settings, configuration, known_focus)
    return trace_settings(settings)
