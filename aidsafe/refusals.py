"""Refusal detection without a model: the patterns a prompt file declares (`refusals = [...]`) found in text.

The dpo whisperer is asked to write a misleading belief; a model that declines still returns a valid
Belief ("I can't help with that"). Its prompt file lists what such replies look like, as case-insensitive
regular expressions; curly apostrophes and runs of whitespace are read as ' and one space before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aidsafe.errors import PolicyError

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


@dataclass(frozen=True)
class Refusals:
    """The compiled refusal patterns of one prompt file (none: nothing is a refusal)."""

    patterns: tuple[re.Pattern[str], ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """The patterns as written (for the stage fingerprint)."""
        return tuple(p.pattern for p in self.patterns)

    def match(self, text: str) -> str | None:
        """The refusal phrase found in text, or None."""
        plain = " ".join(text.translate(_APOSTROPHES).split())
        for pattern in self.patterns:
            if found := pattern.search(plain):
                return found.group(0)
        return None


def compile_refusals(path: Path, patterns: list[str]) -> Refusals:
    """Compile a prompt file's refusal patterns; an invalid or empty one is an error naming the file."""
    compiled = []
    for number, source in enumerate(patterns, start=1):
        if not source.strip():
            raise PolicyError(path, f"refusals[{number}]: empty pattern")
        try:
            compiled.append(re.compile(source, re.IGNORECASE))
        except re.error as exc:
            raise PolicyError(path, f"refusals[{number}]: not a valid regular expression: {exc}") from exc
        if compiled[-1].search(""):
            raise PolicyError(path, f"refusals[{number}]: {source!r} matches empty text (every reply)")
    return Refusals(tuple(compiled))
