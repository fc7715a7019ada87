"""Prompt files: everything a model reads, in policies/prompts/, validated on load.

Every stage prompt is a pair of messages. The system message is static for the whole run (the shared
preamble with the policies first, then the stage instructions), so backends reuse their prefix cache
across calls (a file with `preamble = false`, such as the dpo whisperer's, has its own system text, which
may insert the policies as ${policies}); the user message carries the row's data at the end, formatted by
aidsafe.render and escaped inside delimiting tags. Each stage file declares the variables it uses; the code's
side of that contract is STAGE_VARIABLES. The tool descriptions are in tools.toml (see aidsafe.tools), the
short texts the code adds (retry instruction, placeholders, the whisperer's re-ask after a refusal) in
fragments.toml.
The grade stage's system text takes the grader's rubric (rubric.toml, see aidsafe.rubric) as ${rubric}.
The review focus of each deliberation agent is a file of agents/ (FocusFile), added at the end of that
agent's system message.

Every row value (the user's prompt and everything a model wrote) is data: each variable of a user template
stands alone inside its own tags (checked on load, UNFENCED_STAGES apart), and every text in a value is
escaped against all the tags of the prompt set, the thought tags aidsafe.render adds and the policy tags of
aidsafe.policies, so no value can close its fence, open another one, or forge a thought or a policy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe import render
from aidsafe.errors import PolicyError
from aidsafe.policies import TAGS as POLICY_TAGS
from aidsafe.refusals import Refusals, compile_refusals
from aidsafe.rubric import load_rubric, render_rubric
from aidsafe.schemas import Belief, Grades, Judgement, Refinement, Simulation
from aidsafe.tools import build_tool, load_tool_texts
from graphs.schemas import Draft, IntentList, Verdict

# The variables the code supplies to each stage's user template; all of them are row data.
STAGE_VARIABLES: dict[str, frozenset[str]] = {
    "intent": frozenset({"prompt"}),
    "draft": frozenset({"prompt", "intents"}),
    "deliberation": frozenset({"prompt", "intents", "cot", "response", "history", "agent"}),
    "refine": frozenset({"prompt", "intents", "cot", "response", "history"}),
    "grade": frozenset({"prompt", "intents", "cot", "response"}),
    "baseline": frozenset({"prompt"}),
    "whisper": frozenset({"prompt", "attempts"}),
    "respond": frozenset({"belief", "prompt"}),
    "judge": frozenset({"prompt", "answer"}),
    "simulate_question": frozenset({"prompt", "choices"}),
    "simulate_rationale": frozenset({"rationale", "choices"}),
}
REQUIRED_VARIABLES = frozenset({"prompt"})
# Stages that must not see the prompt: the rationales simulator predicts the answer from the rationale alone.
STAGE_REQUIRED: dict[str, frozenset[str]] = {"simulate_rationale": frozenset({"rationale"})}
# Variables the code writes itself, not row data: the only ones a user template may use outside tags.
CODE_VARIABLES = frozenset({"agent"})
# Stages whose user template is deliberately the row's text as a user would type it, without fences (the dpo
# responder, which must meet the belief the way a deployed model does).
UNFENCED_STAGES = frozenset({"respond"})
# The review focus files of the deliberation agents (a folder of the prompt directory), and the stages whose
# calls may carry a focus.
FOCUS_DIR = "agents"
FOCUS_STAGES = ("deliberation",)
# Static texts a stage's system template must contain, besides ${policies} (not row data): the rubric.
SYSTEM_VARIABLES: dict[str, frozenset[str]] = {"grade": frozenset({"rubric"})}
# The reply schema (tool) of each stage prompt.
STAGE_SCHEMAS: dict[str, type[BaseModel]] = {
    "intent": IntentList,
    "draft": Draft,
    "deliberation": Verdict,
    "refine": Refinement,
    "grade": Grades,
    "baseline": Draft,
    "whisper": Belief,
    "respond": Draft,
    "judge": Judgement,
    "simulate_question": Simulation,
    "simulate_rationale": Simulation,
}
# fragments.toml: the variables each fragment may use, and those it must use.
FRAGMENT_VARIABLES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "retry": (frozenset({"reason", "tool"}), frozenset({"reason"})),
    "no_history": (frozenset(), frozenset()),
    "no_attempts": (frozenset(), frozenset()),
    "no_intents": (frozenset(), frozenset()),
    "whisper_refused": (frozenset({"refusal", "tool"}), frozenset()),
}
# Fragments a stage's calls use besides the retry instruction and its variables' placeholders.
STAGE_FRAGMENTS: dict[str, tuple[str, ...]] = {"whisper": ("whisper_refused",), "grade": ("no_intents",)}
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
    preamble: bool = Field(
        True, description="Start the system message with the shared preamble (false: the system text alone, "
        "which may then insert the policies as ${policies})",
    )  # fmt: skip
    refusals: list[str] = Field(
        default_factory=list, description="Regular expressions marking a reply as a refusal (ignoring case)"
    )


class PreambleFile(BaseModel):
    """The schema of the shared preamble: the only place the policies are inserted."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=20, description="Shared system text; must contain ${policies}")


class FocusFile(BaseModel):
    """The schema of a review focus file (agents/*.toml): agentN takes the Nth unless its role sets one."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description="The name a role's `focus` setting uses")
    text: str = Field(min_length=20, description="Added after the deliberation instructions; no variables")


class FragmentsFile(BaseModel):
    """The schema of fragments.toml: the short texts the code adds to conversations."""

    model_config = ConfigDict(extra="forbid")

    retry: str = Field(min_length=10, description="Sent after an invalid reply; ${reason}, ${tool}")
    no_history: str = Field(min_length=1, description="In place of an empty review history")
    no_attempts: str = Field(min_length=1, description="In place of an empty list of dpo attempts")
    no_intents: str = Field(min_length=1, description="In place of an empty intent list, for the grader")
    whisper_refused: str = Field(
        min_length=10, description="Sent to the dpo whisperer after a refusal: ${refusal}, ${tool}"
    )


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
    refusals: Refusals = field(default_factory=Refusals)
    fence_tags: frozenset[str] = frozenset()  # every tag of the prompt set and the code (see load_prompts)

    def messages(self, **data: render.Value) -> list[tuple[str, str]]:
        """(role, content) messages: each variable formatted by aidsafe.render with every data text in it
        escaped, placed last."""
        if unknown := set(data) - STAGE_VARIABLES[self.stage]:
            raise ValueError(f"{self.stage}: the code supplies no variable(s) {sorted(unknown)}")
        used = self.user.get_identifiers()
        if missing := [name for name in used if name not in data]:
            raise ValueError(f"{self.stage}: no value for variable(s) {missing}")
        escape = functools.partial(escape_data, tags=self.tags | self.fence_tags)
        safe = {name: render.variable(name, data[name], self.placeholders, escape) for name in used}
        return [("system", self.system), ("human", self.user.substitute(safe))]


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run, keyed by stage, with the tools and the fragments."""

    directory: str
    stages: dict[str, StagePrompt]
    tools: dict[str, dict[str, Any]]
    fragments: dict[str, str]
    focus: dict[str, str] = field(default_factory=dict)  # review focus id -> text, in file-name order

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
            texts = [name, stage.system, stage.user.template, tool, *fragments, *stage.refusals.sources]
            focus = [f"{k}\0{v}" for k, v in self.focus.items()] if name in FOCUS_STAGES else []
            digest.update("\0".join([*texts, *focus, ""]).encode())
        return "sha256:" + digest.hexdigest()[:16]

    def messages(
        self, stage: str, data: Mapping[str, render.Value], focus: str | None = None
    ) -> list[tuple[str, str]]:
        """The messages of one call: the stage's, with the instructions of the review focus `focus` (if
        given) at the end of the system message, after the text every agent shares (prefix caches)."""
        messages = self.stages[stage].messages(**data)
        if focus is None:
            return messages
        if stage not in FOCUS_STAGES:
            raise ValueError(f"{stage}: a review focus applies only to {', '.join(FOCUS_STAGES)}")
        if focus not in self.focus:
            raise ValueError(f"no review focus {focus!r}; the focus files define {sorted(self.focus)}")
        (role, system), *rest = messages
        return [(role, f"{system}\n\n{self.focus[focus]}"), *rest]

    @property
    def systems(self) -> list[str]:
        """Every system message a call can send: each stage's, and the focus stages' with each focus."""
        plain = [stage.system for stage in self.stages.values()]
        return plain + [f"{self.stages[s].system}\n\n{t}" for s in FOCUS_STAGES for t in self.focus.values()]

    def _fragments_of(self, stage: StagePrompt) -> list[str]:
        placeholders = [render.PLACEHOLDERS[v] for v in sorted(stage.variables) if v in render.PLACEHOLDERS]
        return ["retry", *placeholders, *STAGE_FRAGMENTS.get(stage.stage, ())]

    def tool(self, schema: type[BaseModel]) -> dict[str, Any]:
        """The OpenAI tool of a reply schema, with the descriptions of tools.toml."""
        return self.tools[schema.__name__]

    def retry(self, reason: str, tool: str) -> str:
        """The instruction sent after an invalid reply."""
        return Template(self.fragments["retry"]).substitute(reason=reason, tool=tool)

    def whisper_refused(self, refusal: str, tool: str) -> str:
        """The message sent to the dpo whisperer after a reply that read as a refusal."""
        return Template(self.fragments["whisper_refused"]).substitute(refusal=refusal, tool=tool)

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


def _fence_tag(template: str, name: str) -> str | None:
    """The tag that every use of variable `name` stands alone inside, or None if a use is outside tags."""
    use = rf"\$(?:{name}\b|\{{{name}\}})"
    fenced = re.compile(rf"<\s*([A-Za-z_][\w-]*)\s*>\s*{use}\s*<\s*/\s*\1\s*>")
    tags = {m.lower() for m in fenced.findall(template)}
    if name in Template(fenced.sub("", template)).get_identifiers() or len(tags) != 1:
        return None
    return tags.pop()


def _check_fenced(path: Path, template: Template) -> None:
    """Every row-data variable of a user template stands alone inside its own tags (one tag per variable)."""
    owner: dict[str, str] = {}
    for name in sorted(set(template.get_identifiers()) - CODE_VARIABLES):
        tag = _fence_tag(template.template, name)
        if tag is None:
            raise PolicyError(
                path, f"user: ${{{name}}} is row data: it must stand alone inside its own tags, "
                f"e.g. <{name}>\n${{{name}}}\n</{name}>"
            )  # fmt: skip
        if tag in owner:
            raise PolicyError(path, f"user: ${{{name}}} and ${{{owner[tag]}}} share the tags <{tag}>")
        owner[tag] = name


def required_variables(stage: str) -> frozenset[str]:
    """The variables a stage's user template must use: the prompt, but where the stage must not see it."""
    return STAGE_REQUIRED.get(stage, REQUIRED_VARIABLES)


def _declared(path: Path, stage: str, variables: list[str]) -> frozenset[str]:
    declared = frozenset(variables)
    if unsupplied := declared - STAGE_VARIABLES[stage]:
        raise PolicyError(
            path,
            f"variables: {sorted(unsupplied)} not supplied by the code for stage {stage!r}; "
            f"it supplies {sorted(STAGE_VARIABLES[stage])}",
        )
    if missing := required_variables(stage) - declared:
        raise PolicyError(path, f"variables: must declare {sorted(missing)}")
    return declared


def _load_stage(
    directory: Path,
    stage: str,
    shared: tuple[str, str],
    fragments: dict[str, str],
    statics: Mapping[str, str] | None = None,
) -> StagePrompt:
    """One stage file; shared: the preamble (with the policies) and the policies text; statics: the texts
    of SYSTEM_VARIABLES (the rubric)."""
    path = directory / f"{stage}.toml"
    spec = _validated(path, PromptFile)
    declared = _declared(path, stage, spec.variables)
    system, user = Template(spec.system), Template(spec.user)
    required = SYSTEM_VARIABLES.get(stage, frozenset())
    allowed = required | (frozenset() if spec.preamble else frozenset({"policies"}))
    _check_variables(path, system, allowed, "system", required)
    _check_variables(path, user, declared, "user", required_variables(stage))
    if stage not in UNFENCED_STAGES:
        _check_fenced(path, user)
    tags = frozenset(m.group(2).lower() for m in _TAG.finditer(spec.user))
    keys = [*render.PLACEHOLDERS.values(), *STAGE_FRAGMENTS.get(stage, ())]
    placeholders = {key: fragments[key] for key in keys}
    text = system.substitute({name: (statics or {})[name] for name in required}, policies=shared[1]).strip()
    return StagePrompt(
        stage, f"{shared[0]}\n\n{text}" if spec.preamble else text, user, tags, declared, placeholders,
        compile_refusals(path, spec.refusals),
    )  # fmt: skip


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


def _load_focus(directory: Path) -> dict[str, str]:
    """The review focus files (agents/*.toml) by id, in file-name order: agentN takes the Nth by default."""
    folder = directory / FOCUS_DIR
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not files:
        raise PolicyError(folder, "no review focus files (*.toml); agentN takes the Nth one")
    focus: dict[str, str] = {}
    seen: dict[str, Path] = {}
    for path in files:
        spec = _validated(path, FocusFile)
        if spec.id in seen:
            raise PolicyError(path, f"duplicate focus id {spec.id!r} (also in {seen[spec.id].name})")
        _check_variables(path, Template(spec.text), frozenset(), "text")
        seen[spec.id] = path
        focus[spec.id] = Template(spec.text).substitute().strip()
    return focus


def _fenced_everywhere(stages: dict[str, StagePrompt]) -> dict[str, StagePrompt]:
    """The stages, each escaping in data every tag of every stage and the code's own (thought, policy)."""
    fence = frozenset().union(*(s.tags for s in stages.values()), render.TAGS, POLICY_TAGS)
    return {name: dataclasses.replace(s, fence_tags=fence) for name, s in stages.items()}


def load_prompts(directory: Path, policies_text: str) -> PromptSet:
    """Load preamble, fragments, tools, the rubric and one file per stage; the policies go into the shared
    preamble, the rubric into the grade stage's instructions."""
    shared = _load_preamble(directory, policies_text)
    fragments = _load_fragments(directory)
    tools_path = directory / "tools.toml"
    texts = load_tool_texts(tools_path, _read(tools_path))
    tools = {schema.__name__: build_tool(schema, texts) for schema in STAGE_SCHEMAS.values()}
    rubric_path = directory / "rubric.toml"
    statics = {"rubric": render_rubric(load_rubric(rubric_path, _read(rubric_path)))}
    stages = {
        stage: _load_stage(directory, stage, (shared, policies_text), fragments, statics)
        for stage in STAGE_VARIABLES
    }
    focus = _load_focus(directory)
    return PromptSet(str(directory), _fenced_everywhere(stages), tools, fragments, focus)
