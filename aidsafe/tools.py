"""The tools sent to the models: pydantic reply schemas with the descriptions of tools.toml laid over them.

The schema classes hold types, limits and validators; every description the model reads (of the tool, of
each nested object and of each field) comes from the file. Loading checks that the file describes every
field of every schema exactly once and nothing else, and fills ${min_items}-style placeholders from the
schema's own limits.
"""

from __future__ import annotations

import copy
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel

from aidsafe.errors import PolicyError
from aidsafe.schemas import Belief, Grades, Judgement, Refinement, RemovedThought, Score, Simulation
from graphs.schemas import Draft, Intent, IntentList, Verdict

SCHEMAS: dict[str, type[BaseModel]] = {
    s.__name__: s
    for s in (
        Intent,
        IntentList,
        Draft,
        Verdict,
        RemovedThought,
        Refinement,
        Score,
        Grades,
        Belief,
        Judgement,
        Simulation,
    )
}
# Placeholder of a field description -> the JSON-schema keyword it is filled from.
LIMITS = {
    "min_items": "minItems",
    "max_items": "maxItems",
    "min_length": "minLength",
    "max_length": "maxLength",
    "minimum": "minimum",
    "maximum": "maximum",
}
Texts = dict[str, tuple[str, dict[str, str]]]  # schema name -> (description, field name -> description)
_SCHEMA_KEYS = ("properties", "items", "anyOf", "oneOf", "allOf", "prefixItems", "additionalProperties")


def _limits(field_schema: dict[str, Any]) -> dict[str, str]:
    """The limits of a field (of its non-null branch, for optional fields) by placeholder name."""
    branches = [field_schema, *field_schema.get("anyOf", [])]
    return {name: str(b[key]) for b in branches for name, key in LIMITS.items() if key in b}


def _fill(path: Path, key: str, text: object, values: dict[str, str]) -> str:
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(path, f"{key}: must be a non-empty text")
    template = Template(text.strip())
    if not template.is_valid():
        raise PolicyError(path, f"{key}: invalid $placeholder (write $$ for a literal $)")
    if unknown := set(template.get_identifiers()) - set(values):
        raise PolicyError(
            path, f"{key}: unknown placeholder(s) {sorted(unknown)}; this field has {sorted(values)}"
        )
    return template.substitute(values)


def _schema_texts(path: Path, name: str, table: object) -> tuple[str, dict[str, str]]:
    if not isinstance(table, dict):
        raise PolicyError(path, f"{name}: must be a table")
    if extra := set(table) - {"description", "fields"}:
        raise PolicyError(path, f"{name}: unknown key(s) {sorted(extra)}; allowed: description, fields")
    fields = table.get("fields")
    if not isinstance(fields, dict):
        raise PolicyError(path, f"{name}.fields: missing table [{name}.fields]")
    properties = SCHEMAS[name].model_json_schema()["properties"]
    if unknown := set(fields) - set(properties):
        raise PolicyError(path, f"{name}.fields: unknown field(s) {sorted(unknown)} of {name}")
    if missing := [f for f in properties if f not in fields]:
        raise PolicyError(path, f"{name}.fields.{missing[0]}: missing description of field {missing[0]}")
    described = {f: _fill(path, f"{name}.fields.{f}", fields[f], _limits(properties[f])) for f in properties}
    return _fill(path, f"{name}.description", table.get("description"), {}), described


def load_tool_texts(path: Path, data: dict[str, object]) -> Texts:
    """Validate tools.toml (already parsed) against SCHEMAS: one description per schema and per field."""
    if unknown := set(data) - set(SCHEMAS):
        raise PolicyError(path, f"unknown schema(s) {sorted(unknown)}; known: {sorted(SCHEMAS)}")
    if missing := [s for s in SCHEMAS if s not in data]:
        raise PolicyError(path, f"{missing[0]}: missing table [{missing[0]}]")
    return {name: _schema_texts(path, name, data[name]) for name in SCHEMAS}


def _overlay(node: dict[str, Any], texts: tuple[str, dict[str, str]]) -> None:
    node["description"] = texts[0]
    for field, text in texts[1].items():
        node["properties"][field]["description"] = text


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every $ref replaced by its definition and without titles (as tool parameters)."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = defs[node["$ref"].rsplit("/", 1)[-1]] | rest
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs) if key in _SCHEMA_KEYS else value
    return out


def build_tool(schema: type[BaseModel], texts: Texts) -> dict[str, Any]:
    """The OpenAI tool of a reply schema: its JSON schema with the file's descriptions, named as the class."""
    parameters = copy.deepcopy(schema.model_json_schema())
    defs = parameters.get("$defs", {})
    for name, definition in defs.items():
        _overlay(definition, texts[name])
    _overlay(parameters, texts[schema.__name__])
    description = parameters.pop("description")
    return {
        "type": "function",
        "function": {
            "name": schema.__name__,
            "description": description,
            "parameters": _inline(parameters, defs),
        },
    }
