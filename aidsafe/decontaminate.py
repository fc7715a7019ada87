"""Overlap of exported prompts with evaluation sets: training data must not contain what it is evaluated on.

The evaluation sets are declared in a TOML file (default data/eval_sets.toml): each is a directory (or file)
of Parquet partitions with a `prompt` column (and an `id`). A prompt overlaps an evaluation set when it is
the same text (exact), the same after normalisation (Unicode NFKC, case, punctuation and whitespace),
shares a run of `ngram` words (13 by default, as in GPT-3's decontamination) with one of its prompts, or
contains one of its shorter prompts (at least `min_words` words) whole: most XSTest prompts have 6-12 words,
fewer than any n-gram that is safe to match on.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidsafe.config import PROJECT_ROOT
from aidsafe.errors import AidsafeError

DEFAULT_EVAL_SETS = PROJECT_ROOT / "data" / "eval_sets.toml"
Kind = Literal["exact", "normalised", "ngram", "contained"]
_NOT_WORD = re.compile(r"[\W_]+")


class EvalSetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="Parquet file or directory of partitions, relative to the declaring file")
    description: str = Field("", description="What the set is and its licence (shown in the dataset card)")


class EvalSetsFile(BaseModel):
    """The schema of eval_sets.toml."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(13, ge=3, le=100, description="Words in a shared run that counts as overlap")
    min_words: int = Field(
        6, ge=1, le=100, description="Shortest evaluation prompt (words) that overlaps when contained whole"
    )
    sets: dict[str, EvalSetSpec] = Field(min_length=1, description="Evaluation sets by name")


@dataclass(frozen=True)
class Match:
    """Why one exported prompt overlaps an evaluation set."""

    eval_set: str
    eval_id: str
    kind: Kind


@dataclass
class EvalIndex:
    """Every prompt of the evaluation sets, by exact text, normalised text and word n-gram."""

    source: Path
    ngram: int
    min_words: int
    descriptions: dict[str, str]
    exact: dict[str, tuple[str, str]] = field(default_factory=dict)  # text -> (set, id)
    normalised: dict[str, tuple[str, str]] = field(default_factory=dict)
    grams: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)
    shorter: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)  # whole prompts < ngram

    def add(self, name: str, ident: str, prompt: str) -> None:
        words = normalise(prompt).split()
        self.exact.setdefault(prompt.strip(), (name, ident))
        self.normalised.setdefault(" ".join(words), (name, ident))
        for gram in ngrams(words, self.ngram):
            self.grams.setdefault(gram, (name, ident))
        if self.min_words <= len(words) < self.ngram:
            self.shorter.setdefault(tuple(words), (name, ident))

    def match(self, prompt: str) -> Match | None:
        """The strongest overlap of one prompt (exact, then normalised, then a shared n-gram), or None."""
        words = normalise(prompt).split()
        if found := self.exact.get(prompt.strip()):
            return Match(*found, "exact")
        if found := self.normalised.get(" ".join(words)):
            return Match(*found, "normalised")
        for gram in ngrams(words, self.ngram):
            if found := self.grams.get(gram):
                return Match(*found, "ngram")
        for size in range(self.min_words, min(self.ngram, len(words) + 1)):
            for run in ngrams(words, size):
                if found := self.shorter.get(run):
                    return Match(*found, "contained")
        return None


@dataclass(frozen=True)
class Overlap:
    """The overlap of some exported prompts: matches by position among them."""

    index: EvalIndex
    checked: int
    matches: dict[int, Match]

    def counts(self) -> dict[str, dict[Kind, int]]:
        """Overlapping prompts per evaluation set and kind."""
        found: dict[str, dict[Kind, int]] = {}
        for m in self.matches.values():
            found.setdefault(m.eval_set, {}).setdefault(m.kind, 0)
            found[m.eval_set][m.kind] += 1
        return found


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols as spaces, whitespace runs as one space."""
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def ngrams(words: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _spec(path: Path) -> EvalSetsFile:
    try:
        return EvalSetsFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise AidsafeError(f"{path}: evaluation sets file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AidsafeError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise AidsafeError(f"{path}: {reasons}") from None


def load_eval_sets(path: Path = DEFAULT_EVAL_SETS) -> EvalIndex:
    """Read the declared evaluation sets; an unreadable one is an error naming the file and the set."""
    spec = _spec(path)
    descriptions = {name: s.description for name, s in spec.sets.items()}
    index = EvalIndex(path, spec.ngram, spec.min_words, descriptions)
    for name, entry in spec.sets.items():
        where = path.parent / entry.path
        try:
            table = pq.read_table(where, columns=None)
        except (OSError, ValueError) as exc:
            raise AidsafeError(f"{path}: evaluation set {name!r}: cannot read {where}: {exc}") from exc
        if "prompt" not in table.column_names:
            raise AidsafeError(f"{path}: evaluation set {name!r}: {where} has no `prompt` column")
        ids = table.column("id").to_pylist() if "id" in table.column_names else range(table.num_rows)
        for ident, prompt in zip(ids, table.column("prompt").to_pylist(), strict=True):
            if prompt:
                index.add(name, str(ident), str(prompt))
    return index


def find_overlap(index: EvalIndex, prompts: Sequence[str]) -> Overlap:
    """Which of the prompts overlap an evaluation set, by position."""
    matches = {i: m for i, p in enumerate(prompts) if (m := index.match(p)) is not None}
    return Overlap(index, len(prompts), matches)


def _kinds(counts: dict[Kind, int], ngram: int) -> str:
    names = {"exact": "exact", "normalised": "normalised", "ngram": f"shared {ngram}-word run",
             "contained": "containing a whole evaluation prompt"}  # fmt: skip
    return ", ".join(f"{counts[k]} {names[k]}" for k in names if k in counts)


def summary_line(overlap: Overlap, dropped: bool) -> str:
    """One line for the command output: how many prompts overlap which evaluation set, and what was done."""
    if not overlap.matches:
        names = ", ".join(overlap.index.descriptions)
        return f"no overlap of the {overlap.checked} prompts with the evaluation sets ({names})"
    sets = "; ".join(f"{name}: {_kinds(c, overlap.index.ngram)}" for name, c in overlap.counts().items())
    action = "dropped (--decontaminate)" if dropped else "kept: `--decontaminate` drops them"
    return f"{len(overlap.matches)} of {overlap.checked} prompts overlap evaluation sets ({sets}); {action}"


def card_section(overlap: Overlap, ids: Sequence[str], dropped: bool, shown: int = 20) -> str:
    """The dataset card's section: what was checked, what overlaps (ids: of the checked prompts)."""
    sets = "".join(
        f"- `{name}`{': ' + text if text else ''}\n" for name, text in overlap.index.descriptions.items()
    )
    lines = [
        f"## Overlap with evaluation sets\n\nEvery prompt ({overlap.checked}) was checked against the "
        f"evaluation sets declared in `{overlap.index.source.name}` for the same text, the same text after "
        f"normalisation (case, punctuation, whitespace), a shared run of {overlap.index.ngram} words and a "
        f"whole evaluation prompt of {overlap.index.min_words} or more words inside it:\n\n{sets}",
        f"\n{summary_line(overlap, dropped)}.\n",
    ]
    if overlap.matches:
        rows = [f"| {ids[i]} | {m.eval_set} | {m.eval_id} | {m.kind} |" for i, m in overlap.matches.items()]
        more = len(rows) - shown
        lines.append(
            "\n| id | evaluation set | its id | match |\n|---|---|---|---|\n" + "\n".join(rows[:shown])
        )
        lines.append(f"\n\n(and {more} more)\n" if more > 0 else "\n")
        if not dropped:
            lines.append(
                "\n**These rows are in the dataset: do not evaluate a model trained on it on these sets.**\n"
            )
    return "".join(lines)
