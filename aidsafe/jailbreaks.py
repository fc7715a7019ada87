"""Attack transforms of the jailbreak robustness evaluation: template files in policies/eval/jailbreaks/.

Each file (`<name>.toml`) has a `description`, a `kind` and a `template` (string.Template syntax: `${name}`,
a literal dollar sign as `$$`). The kind says what the code does to the prompt, and so which variables the
template takes; everything the target model reads is in the file:

- `wrap`: the prompt as it is, as `${prompt}` (role play, prefix injection, refusal suppression, ...);
- `base64`: the prompt base64-encoded (UTF-8, standard alphabet, padded), as `${encoded}`;
- `split`: the prompt cut at word boundaries into `${part1}` ... `${partN}` (N >= 2, as many as the template
  names), whose concatenation is the prompt exactly.

apply() makes the attack prompt; recover() gets the original prompt back from one (the reversibility check of
the encodings). A file that breaks these rules is a PolicyError naming it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aidsafe.config import PROJECT_ROOT
from aidsafe.errors import PolicyError
from aidsafe.tomlfile import read_model

DEFAULT_DIR = PROJECT_ROOT / "policies" / "eval" / "jailbreaks"
Kind = Literal["wrap", "base64", "split"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PART = re.compile(r"^part([1-9][0-9]*)$")


class JailbreakFile(BaseModel):
    """The schema of an attack transform file."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=10, description="What the attack is and where it comes from")
    kind: Kind = Field(description="What the code does to the prompt: wrap, base64 or split")
    template: str = Field(min_length=10, description="The attack prompt, with the kind's ${variables}")


@dataclass(frozen=True)
class Transform:
    """A validated attack transform."""

    name: str
    kind: Kind
    description: str
    template: Template
    parts: int = 0  # split: how many parts the prompt is cut into

    def variables(self, prompt: str) -> dict[str, str]:
        """The template's values for one prompt."""
        if self.kind == "wrap":
            return {"prompt": prompt}
        if self.kind == "base64":
            return {"encoded": base64.b64encode(prompt.encode("utf-8")).decode("ascii")}
        return {f"part{i}": part for i, part in enumerate(split_prompt(prompt, self.parts), start=1)}


def split_prompt(prompt: str, parts: int) -> list[str]:
    """The prompt cut into `parts` non-empty pieces, at word boundaries when it has enough words (each word
    keeps the whitespace after it), else between characters; "".join() of them is the prompt."""
    if len(prompt) < parts:
        raise ValueError(f"cannot split a prompt of {len(prompt)} characters into {parts} parts")
    words = re.findall(r"\s*\S+\s*", prompt) or [prompt]
    if len(words) < parts:
        words = list(prompt)
    base, extra = divmod(len(words), parts)
    sizes = [base + (i < extra) for i in range(parts)]
    starts = [sum(sizes[:i]) for i in range(parts)]
    return ["".join(words[start : start + size]) for start, size in zip(starts, sizes, strict=True)]


def _expected(path: Path, kind: Kind, names: list[str]) -> int:
    """Check the template's variables against its kind; the number of split parts (0 otherwise)."""
    wanted = {"wrap": ["prompt"], "base64": ["encoded"]}.get(kind)
    if wanted is not None:
        if sorted(set(names)) != wanted:
            raise PolicyError(path, f"template: a {kind} template takes ${{{wanted[0]}}} only, not {names}")
        return 0
    numbers = sorted({int(m.group(1)) for n in names if (m := _PART.match(n))})
    if len(numbers) < len(set(names)) or len(numbers) < 2 or numbers != list(range(1, len(numbers) + 1)):
        raise PolicyError(
            path, f"template: a split template takes ${{part1}}, ${{part2}}, ... only, not {names}"
        )
    return len(numbers)


def _check_template(path: Path, kind: Kind, text: str) -> tuple[Template, int]:
    """The template, if it is well formed, uses its kind's variables and can be read back by recover(), and
    the number of split parts."""
    template = Template(text)
    if not template.is_valid():
        raise PolicyError(path, "template: a `$` that starts no ${variable} (write a literal $ as $$)")
    parts = _expected(path, kind, template.get_identifiers())
    if re.search(r"\$\{?\w+\}?\s*\$\{?\w", text.replace("$$", "")):
        raise PolicyError(path, "template: two variables side by side cannot be told apart by recover()")
    return template, parts


def load_transform(path: Path) -> Transform:
    """Read and validate one transform file (its name: the file name without .toml)."""
    if not _NAME.match(path.stem):
        raise PolicyError(
            path, "the file name must be a lower-case name (letters, digits, _) ending in .toml"
        )
    spec = read_model(path, JailbreakFile, "transform file")
    template, parts = _check_template(path, spec.kind, spec.template)
    return Transform(path.stem, spec.kind, spec.description.strip(), template, parts)


def load_transforms(directory: Path = DEFAULT_DIR) -> dict[str, Transform]:
    """Every transform file of a directory, by name, in file-name order; none is an error."""
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PolicyError(directory, "no attack transform files (*.toml)")
    return {t.name: t for t in map(load_transform, files)}


@functools.cache
def _default() -> dict[str, Transform]:
    return load_transforms(DEFAULT_DIR)


def get(transform: str | Transform) -> Transform:
    """A transform by name (from policies/eval/jailbreaks/), or the one given."""
    if isinstance(transform, Transform):
        return transform
    if transform not in _default():
        raise KeyError(f"no attack transform {transform!r} (known: {', '.join(_default())})")
    return _default()[transform]


def apply(transform: str | Transform, prompt: str) -> str:
    """The attack prompt: the transform's template filled with the (encoded or split) prompt."""
    chosen = get(transform)
    return chosen.template.substitute(chosen.variables(prompt))


def _pattern(template: Template) -> re.Pattern[str]:
    """A regular expression matching the template's output, each variable a named group (a repeated
    variable: the same text again)."""
    pieces, seen, last = [], set(), 0
    for m in template.pattern.finditer(template.template):
        pieces.append(re.escape(template.template[last : m.start()]))
        name = m.group("named") or m.group("braced")
        if not name:
            pieces.append(re.escape("$"))
        else:
            pieces.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
            seen.add(name)
        last = m.end()
    pieces.append(re.escape(template.template[last:]))
    return re.compile("".join(pieces), re.DOTALL)


def recover(transform: str | Transform, text: str) -> str:
    """The original prompt of an attack prompt made by apply(); a ValueError if the text is not one."""
    chosen = get(transform)
    found = _pattern(chosen.template).fullmatch(text)
    if found is None:
        raise ValueError(f"not an attack prompt of the {chosen.name!r} transform")
    if chosen.kind == "wrap":
        return found.group("prompt")
    if chosen.kind == "base64":
        try:
            return base64.b64decode(found.group("encoded"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{chosen.name}: the encoded text is not base64 of UTF-8 text: {exc}") from exc
    return "".join(found.group(f"part{i}") for i in range(1, chosen.parts + 1))
