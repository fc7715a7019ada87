"""Prompt files: one TOML file per stage, validated on load, changeable without touching Python.

Every stage prompt is a pair of messages. The system message is static for the whole run (the shared
preamble with the policies first, then the stage instructions), so backends reuse their prefix cache
across calls; the user message carries the row's text at the end, as delimited data.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe.errors import PolicyError

# The variables each stage's user template may use; all of them are row data.
STAGE_VARIABLES: dict[str, frozenset[str]] = {
    "intent": frozenset({"prompt"}),
    "draft": frozenset({"prompt", "intents"}),
    "deliberation": frozenset({"prompt", "intents", "cot", "response", "history", "agent"}),
    "refine": frozenset({"prompt", "intents", "cot", "response", "history"}),
    "grade": frozenset({"prompt", "cot", "response"}),
    "baseline": frozenset({"prompt"}),
    "whisper": frozenset({"prompt", "attempts"}),
}
REQUIRED_VARIABLES = frozenset({"prompt"})
M = TypeVar("M", bound=BaseModel)
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z_][\w-]*)\s*>")


class PromptFile(BaseModel):
    """The schema of a stage prompt file."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=20, description="Static stage instructions, no variables")
    user: str = Field(min_length=5, description="Row data, as ${variables} inside delimiting tags")


class PreambleFile(BaseModel):
    """The schema of the shared preamble: the only place the policies are inserted."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=20, description="Shared system text; must contain ${policies}")


def escape_data(value: str, tags: frozenset[str]) -> str:
    """Neutralise any of the prompt's own delimiting tags inside row data, so data cannot close them."""

    def repl(match: re.Match[str]) -> str:
        if match.group(2).lower() in tags:
            return f"&lt;{match.group(1)}{match.group(2)}&gt;"
        return match.group(0)

    return _TAG.sub(repl, value)


@dataclass(frozen=True)
class StagePrompt:
    """A validated stage prompt, ready to render."""

    stage: str
    system: str
    user: Template
    tags: frozenset[str]

    def messages(self, **data: object) -> list[tuple[str, str]]:
        """Render (role, content) messages; row data is escaped and placed last."""
        safe = {k: escape_data(_interim_text(k, v), self.tags) for k, v in data.items()}
        return [("system", self.system), ("human", self.user.substitute(safe))]


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run, keyed by stage."""

    directory: str
    stages: dict[str, StagePrompt]

    @property
    def hash(self) -> str:
        """Content hash of every rendered system text and user template."""
        return self.hash_of(tuple(self.stages))

    def hash_of(self, names: tuple[str, ...]) -> str:
        """Content hash of some stages' prompts (with the shared preamble and policies)."""
        digest = hashlib.sha256()
        for name in sorted(names):
            stage = self.stages[name]
            digest.update(f"{name}\0{stage.system}\0{stage.user.template}\0".encode())
        return "sha256:" + digest.hexdigest()[:16]

    def __getitem__(self, stage: str) -> StagePrompt:
        return self.stages[stage]


def _read(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise PolicyError(path, "prompt file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(path, f"not valid TOML: {exc}") from exc


def _validated(path: Path, schema: type[M]) -> M:
    try:
        return schema.model_validate(_read(path))
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(path, reasons) from exc


def _check_variables(path: Path, template: Template, allowed: frozenset[str], part: str) -> None:
    if not template.is_valid():
        raise PolicyError(path, f"{part}: invalid $placeholder (write $$ for a literal $)")
    used = set(template.get_identifiers())
    if unknown := used - allowed:
        raise PolicyError(path, f"{part}: unknown variable(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if part == "user" and (missing := REQUIRED_VARIABLES - used):
        raise PolicyError(path, f"user: must contain {sorted('${' + m + '}' for m in missing)}")


def load_prompts(directory: Path, policies_text: str) -> PromptSet:
    """Load preamble.toml and one file per stage; the policies go into the shared preamble."""
    preamble_path = directory / "preamble.toml"
    preamble = Template(_validated(preamble_path, PreambleFile).text)
    _check_variables(preamble_path, preamble, frozenset({"policies"}), "text")
    if "policies" not in preamble.get_identifiers():
        raise PolicyError(preamble_path, "text: must contain ${policies}")
    shared = preamble.substitute(policies=policies_text).strip()
    stages = {}
    for stage, allowed in STAGE_VARIABLES.items():
        path = directory / f"{stage}.toml"
        spec = _validated(path, PromptFile)
        system, user = Template(spec.system), Template(spec.user)
        _check_variables(path, system, frozenset(), "system")
        _check_variables(path, user, allowed, "user")
        tags = frozenset(m.group(2).lower() for m in _TAG.finditer(spec.user))
        stages[stage] = StagePrompt(stage, f"{shared}\n\n{system.substitute().strip()}", user, tags)
    return PromptSet(directory=str(directory), stages=stages)


def _interim_text(name: str, value: object) -> str:  # INTERIM until aidsafe/render.py
    if isinstance(value, str):
        return value
    items = list(value)  # type: ignore[call-overload]
    if name == "cot":
        return "\n".join(f"{n}. {t}" for n, t in enumerate(items, start=1))
    if name == "intents":
        return "\n".join(f"- [{i['kind']}] {i['description']}" for i in items)
    if name == "history":
        if not items:
            return "(no review yet)"
        return "\n".join(f"turn {t['turn']} by {t['agent']}: {t['verdict']}: {t['feedback']}" for t in items)
    if not items:
        return "(no attempt yet)"
    return "\n".join(
        f"attempt {a['attempt']}: belief: {a['belief']} -> policy faithfulness {a['score_policy_cot']}/5: "
        f"{a['feedback']}"
        for a in items
    )
