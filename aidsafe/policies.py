"""Policy sets: a directory of TOML files, one policy each, validated on load and identified by a hash."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aidsafe.errors import PolicyError

# The tags that structure the policies in prompts. aidsafe.prompts neutralises them in every data value, so
# text in a user prompt or a model's reply (a `### Policy` heading, a <policy> tag) can never add a policy.
TAGS = frozenset({"policies", "policy"})
_POLICY_TAG = re.compile(r"<\s*/?\s*polic(?:y|ies)\b", re.IGNORECASE)


class Policy(BaseModel):
    """One safety policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description="Stable snake_case identifier")
    title: str = Field(min_length=3, max_length=200)
    text: str = Field(min_length=20, description="What is and is not allowed, and how to help safely")

    @field_validator("title", "text")
    @classmethod
    def _no_policy_tags(cls, value: str) -> str:
        if _POLICY_TAG.search(value):
            raise ValueError("must not contain <policy> or <policies> tags (they delimit the policies)")
        return value


class PolicySet(BaseModel):
    """The policies of a run, in file-name order, with the content hash recorded in every output row."""

    model_config = ConfigDict(frozen=True)

    directory: str
    policies: tuple[Policy, ...]

    @cached_property  # asked for every row
    def hash(self) -> str:
        canonical = json.dumps([p.model_dump() for p in self.policies], sort_keys=True, ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def render(self) -> str:
        """The policies as the text placed in prompts: one <policy id="..."> element each, inside <policies>.

        Only this structure makes a policy; the tags are neutralised in all data (see TAGS).
        """
        items = (f'<policy id="{p.id}">\n{p.title}\n\n{p.text.strip()}\n</policy>' for p in self.policies)
        return "<policies>\n" + "\n\n".join(items) + "\n</policies>"


def _load_policy(path: Path) -> Policy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(path, f"not valid TOML: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(path, reasons) from exc


def load_policies(directory: Path) -> PolicySet:
    """Load and validate every *.toml policy file of a directory."""
    if not directory.is_dir():
        raise PolicyError(directory, "policy directory not found")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PolicyError(directory, "no policy files (*.toml) in the directory")
    policies = [_load_policy(f) for f in files]
    seen: dict[str, Path] = {}
    for path, policy in zip(files, policies, strict=True):
        if policy.id in seen:
            raise PolicyError(path, f"duplicate policy id {policy.id!r} (also in {seen[policy.id].name})")
        seen[policy.id] = path
    return PolicySet(directory=str(directory), policies=tuple(policies))
