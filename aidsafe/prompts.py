"""Prompt files: everything a model reads, in policies/prompts/, validated on load.

Every stage prompt is a pair of messages. The system message is static for the whole run (the shared
preamble with the policies first, then the stage instructions), so backends reuse their prefix cache
across calls; the user message carries the row's data at the end, formatted by aidsafe.render and
escaped inside delimiting tags. Each stage file declares the variables it uses; the code's side of that
contract is STAGE_VARIABLES. The tool descriptions are in tools.toml (see aidsafe.tools), the short texts
the code adds (retry instruction, placeholders, belief framing) in fragments.toml.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe import render
from aidsafe.errors import PolicyError
from aidsafe.schemas import Belief, Grades, Refinement
from aidsafe.tools import build_tool, load_tool_texts
from graphs.schemas import Draft, IntentList, Verdict

# The variables the code supplies to each stage's user template; all of them are row data.
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
# The reply schema (tool) of each stage prompt.
STAGE_SCHEMAS: dict[str, type[BaseModel]] = {
    "intent": IntentList,
    "draft": Draft,
    "deliberation": Verdict,
    "refine": Refinement,
    "grade": Grades,
    "baseline": Draft,
    "whisper": Belief,
}
# fragments.toml: the variables each fragment may use, and those it must use.
FRAGMENT_VARIABLES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "retry": (frozenset({"reason", "tool"}), frozenset({"reason"})),
    "no_history": (frozenset(), frozenset()),
    "no_attempts": (frozenset(), frozenset()),
    "belief_framing": (frozenset({"belief", "prompt"}), frozenset({"belief", "prompt"})),
}
# Fragments a stage's calls use besides the retry instruction and its variables' placeholders.
STAGE_FRAGMENTS: dict[str, tuple[str, ...]] = {"whisper": ("belief_framing",)}
M = TypeVar("M", bound=BaseModel)
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z_][\w-]*)\s*>")
# Invisible characters a tag name may be split with (zero-width space/joiners, word joiner, BOM, soft hyphen).
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# A tag-like sequence in data: any spacing, attributes, a self-closing slash, invisible chars in its name.
_DATA_TAG = re.compile(rf"<[\s{_INVISIBLE}]*(/?)[\s{_INVISIBLE}]*([A-Za-z_][\w\-{_INVISIBLE}]*)([^<>]*)>")


class PromptFile(BaseModel):
    """The schema of a stage prompt file."""

    model_config = ConfigDict(extra="forbid")

    variables: list[str] = Field(description="The variables the user template may use")
    system: str = Field(min_length=20, description="Static stage instructions, no variables")
    user: str = Field(min_length=5, description="Row data, as ${variables} inside delimiting tags")


class PreambleFile(BaseModel):
    """The schema of the shared preamble: the only place the policies are inserted."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=20, description="Shared system text; must contain ${policies}")


class FragmentsFile(BaseModel):
    """The schema of fragments.toml: the short texts the code adds to conversations."""

    model_config = ConfigDict(extra="forbid")

    retry: str = Field(min_length=10, description="Sent after an invalid reply; ${reason}, ${tool}")
    no_history: str = Field(min_length=1, description="In place of an empty review history")
    no_attempts: str = Field(min_length=1, description="In place of an empty list of dpo attempts")
    belief_framing: str = Field(min_length=1, description="The dpo drafter's prompt: ${belief}, ${prompt}")


def escape_data(value: str, tags: frozenset[str]) -> str:
    """Neutralise any of the prompt's own delimiting tags inside row data, so data cannot close them."""

    def repl(match: re.Match[str]) -> str:
        name = "".join(c for c in match.group(2) if c not in _INVISIBLE)
        if name.lower() in tags:
            return f"&lt;{match.group(1)}{name}&gt;"
        return match.group(0)

    return _DATA_TAG.sub(repl, value)


@dataclass(frozen=True)
class StagePrompt:
    """A validated stage prompt, ready to render."""

    stage: str
    system: str
    user: Template
    tags: frozenset[str]
    variables: frozenset[str]
    placeholders: Mapping[str, str]

    def messages(self, **data: render.Value) -> list[tuple[str, str]]:
        """(role, content) messages: each variable formatted by aidsafe.render, escaped, placed last."""
        if unknown := set(data) - STAGE_VARIABLES[self.stage]:
            raise ValueError(f"{self.stage}: the code supplies no variable(s) {sorted(unknown)}")
        used = self.user.get_identifiers()
        if missing := [name for name in used if name not in data]:
            raise ValueError(f"{self.stage}: no value for variable(s) {missing}")
        safe = {
            name: escape_data(render.variable(name, data[name], self.placeholders), self.tags)
            for name in used
        }
        return [("system", self.system), ("human", self.user.substitute(safe))]


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run, keyed by stage, with the tools and the fragments."""

    directory: str
    stages: dict[str, StagePrompt]
    tools: dict[str, dict[str, Any]]
    fragments: dict[str, str]

    @property
    def hash(self) -> str:
        """Content hash of every stage's texts."""
        return self.hash_of(tuple(self.stages))

    def hash_of(self, names: tuple[str, ...]) -> str:
        """Content hash of everything some stages' calls send: prompts (with the shared preamble and
        policies), tool descriptions and fragments."""
        digest = hashlib.sha256()
        for name in sorted(names):
            stage = self.stages[name]
            tool = json.dumps(self.tool(STAGE_SCHEMAS[name]), sort_keys=True)
            fragments = [self.fragments[f] for f in self._fragments_of(stage)]
            digest.update("\0".join([name, stage.system, stage.user.template, tool, *fragments, ""]).encode())
        return "sha256:" + digest.hexdigest()[:16]

    def _fragments_of(self, stage: StagePrompt) -> list[str]:
        placeholders = [render.PLACEHOLDERS[v] for v in sorted(stage.variables) if v in render.PLACEHOLDERS]
        return ["retry", *placeholders, *STAGE_FRAGMENTS.get(stage.stage, ())]

    def tool(self, schema: type[BaseModel]) -> dict[str, Any]:
        """The OpenAI tool of a reply schema, with the descriptions of tools.toml."""
        return self.tools[schema.__name__]

    def retry(self, reason: str, tool: str) -> str:
        """The instruction sent after an invalid reply."""
        return Template(self.fragments["retry"]).substitute(reason=reason, tool=tool)

    def frame_belief(self, belief: str, prompt: str) -> str:
        """The dpo drafter's prompt: the whisperer's belief framed with the user prompt."""
        return Template(self.fragments["belief_framing"]).substitute(belief=belief, prompt=prompt)

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


def _check_variables(
    path: Path, template: Template, allowed: frozenset[str], part: str, required: frozenset[str] = frozenset()
) -> None:
    if not template.is_valid():
        raise PolicyError(path, f"{part}: invalid $placeholder (write $$ for a literal $)")
    used = set(template.get_identifiers())
    if unknown := used - allowed:
        raise PolicyError(path, f"{part}: unknown variable(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if missing := required - used:
        raise PolicyError(path, f"{part}: must contain {', '.join('${' + m + '}' for m in sorted(missing))}")


def _declared(path: Path, stage: str, variables: list[str]) -> frozenset[str]:
    declared = frozenset(variables)
    if unsupplied := declared - STAGE_VARIABLES[stage]:
        raise PolicyError(
            path,
            f"variables: {sorted(unsupplied)} not supplied by the code for stage {stage!r}; "
            f"it supplies {sorted(STAGE_VARIABLES[stage])}",
        )
    if missing := REQUIRED_VARIABLES - declared:
        raise PolicyError(path, f"variables: must declare {sorted(missing)}")
    return declared


def _load_stage(directory: Path, stage: str, shared: str, fragments: dict[str, str]) -> StagePrompt:
    path = directory / f"{stage}.toml"
    spec = _validated(path, PromptFile)
    declared = _declared(path, stage, spec.variables)
    system, user = Template(spec.system), Template(spec.user)
    _check_variables(path, system, frozenset(), "system")
    _check_variables(path, user, declared, "user", REQUIRED_VARIABLES)
    tags = frozenset(m.group(2).lower() for m in _TAG.finditer(spec.user))
    placeholders = {key: fragments[key] for key in render.PLACEHOLDERS.values()}
    return StagePrompt(
        stage, f"{shared}\n\n{system.substitute().strip()}", user, tags, declared, placeholders
    )


def _load_preamble(directory: Path, policies_text: str) -> str:
    path = directory / "preamble.toml"
    preamble = Template(_validated(path, PreambleFile).text)
    _check_variables(path, preamble, frozenset({"policies"}), "text", frozenset({"policies"}))
    return preamble.substitute(policies=policies_text).strip()


def _load_fragments(directory: Path) -> dict[str, str]:
    path = directory / "fragments.toml"
    fragments = _validated(path, FragmentsFile).model_dump()
    for key, (allowed, required) in FRAGMENT_VARIABLES.items():
        _check_variables(path, Template(fragments[key]), allowed, key, required)
    return {key: text.strip() for key, text in fragments.items()}


def load_prompts(directory: Path, policies_text: str) -> PromptSet:
    """Load preamble, fragments, tools and one file per stage; the policies go into the shared preamble."""
    shared = _load_preamble(directory, policies_text)
    fragments = _load_fragments(directory)
    tools_path = directory / "tools.toml"
    texts = load_tool_texts(tools_path, _read(tools_path))
    tools = {schema.__name__: build_tool(schema, texts) for schema in STAGE_SCHEMAS.values()}
    stages = {stage: _load_stage(directory, stage, shared, fragments) for stage in STAGE_VARIABLES}
    return PromptSet(directory=str(directory), stages=stages, tools=tools, fragments=fragments)
