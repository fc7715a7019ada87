"""Multiple-choice evaluation items: a loader (Parquet or JSONL) and a model-free scorer.

A file has one item a row: `question` (text), `choices` (a list of 2 to 26 distinct texts) and `answer`: the
letter of the right choice ("A" is the first; any case), its 0-based index (an integer), or its exact text.
The loader turns each item into an evaluation row (`id`, `prompt`, `label` "safe", `set`, `category`,
`question`, `choices`, `answer` as a letter; other columns are carried through), the prompt rendered from the
template file policies/eval/mcq.toml. `id` and `category` come from the row if it has them (else
`<set>-<row>` and the set name). A bad item is an InputError naming the file and the row (1-based: the line of
a JSONL file, the row of a Parquet file).

score() reads the letter a reply gives ("B", "B.", "(B)", "B) Paris", "Answer: B", "The answer is B."...) or,
failing that, the exact text of a choice; a reply that gives no letter, or several, is wrong.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aidsafe.config import PROJECT_ROOT
from aidsafe.errors import InputError, PolicyError
from aidsafe.records import read_records
from aidsafe.tomlfile import read_model

DEFAULT_TEMPLATE = PROJECT_ROOT / "policies" / "eval" / "mcq.toml"
LETTERS = string.ascii_uppercase
COLUMNS = ("question", "choices", "answer")
_LONE = re.compile(r"\(?([A-Za-z])\)?[.):]?")
_LEADING = re.compile(r"\(?([A-Z])(?:\)|[.:])\s+(\S.*)", re.DOTALL)
_MARKED = re.compile(
    r"(?i:\b(?:answer|option|choice|letter)\b(?:\s+(?:is|would be|will be))?(?:\s+(?:option|choice|letter))?)"
    r"\s*[:=-]?\s*\(?([A-Z])\)?(?!\w)((?:\s*(?:,|/|&|\bor\b|\band\b)\s*\(?[A-Z]\)?(?!\w))*)"
)


class TemplateFile(BaseModel):
    """The schema of mcq.toml."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=10, description="What the prompt asks")
    template: str = Field(min_length=10, description="The prompt: ${question}, ${choices}, ${letters}")
    choice: str = Field(min_length=3, description="One line of ${choices}: ${letter} and ${text}")


@dataclass(frozen=True)
class McqTemplate:
    """A validated multiple-choice prompt template."""

    template: string.Template
    choice: string.Template

    def render(self, question: str, choices: list[str]) -> str:
        """The prompt of one item: the question and its lettered choices."""
        lines = "\n".join(self.choice.substitute(letter=LETTERS[i], text=c) for i, c in enumerate(choices))
        letters = LETTERS[: len(choices)]
        spoken = f"{', '.join(letters[:-1])} or {letters[-1]}"
        return self.template.substitute(question=question, choices=lines, letters=spoken)


def _checked(path: Path, key: str, text: str, allowed: set[str], required: set[str]) -> string.Template:
    template = string.Template(text)
    names = set(template.get_identifiers())
    if not template.is_valid() or not required <= names <= allowed:
        raise PolicyError(
            path, f"{key}: must use ${{{'}, ${'.join(sorted(required))}}}, may use only {sorted(allowed)}, "
            "and must write a literal $ as $$",
        )  # fmt: skip
    return template


def load_template(path: Path = DEFAULT_TEMPLATE) -> McqTemplate:
    """Read and validate a multiple-choice template file; a malformed one is a PolicyError naming it."""
    spec = read_model(path, TemplateFile, "template file")
    return McqTemplate(
        _checked(
            path, "template", spec.template, {"question", "choices", "letters"}, {"question", "choices"}
        ),
        _checked(path, "choice", spec.choice, {"letter", "text"}, {"letter", "text"}),
    )


def _choices(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError("`choices` must be a list of non-empty texts")
    if not 2 <= len(value) <= len(LETTERS):
        raise ValueError(f"`choices` must have 2 to {len(LETTERS)} entries, not {len(value)}")
    if len({c.strip().casefold() for c in value}) < len(value):
        raise ValueError("`choices` has the same text twice")
    return list(value)


def answer_letter(answer: Any, choices: list[str]) -> str:
    """The letter of an answer given as a letter, a 0-based index or the text of a choice (ValueError if
    it is none of them, or a letter and a choice's text that disagree)."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise ValueError(f"`answer` index {answer} is not within the {len(choices)} choices (0-based)")
        return LETTERS[answer]
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"`answer` must be a letter, a 0-based index or a choice's text, not {answer!r}")
    text = answer.strip()
    by_text = [LETTERS[i] for i, c in enumerate(choices) if c.strip() == text]
    by_letter = [text.upper()] if len(text) == 1 and text.upper() in LETTERS[: len(choices)] else []
    if by_text and by_letter and by_text != by_letter:
        raise ValueError(
            f"`answer` {text!r} is both letter {by_letter[0]} and the text of choice {by_text[0]}"
        )
    if not (found := by_letter or by_text):
        raise ValueError(f"`answer` {text!r} is neither a choice's letter nor the text of a choice")
    return found[0]


def eval_row(record: Mapping[str, Any], template: McqTemplate, set_name: str, number: int) -> dict[str, Any]:
    """One item as an evaluation row (ValueError if it is not a valid item)."""
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("`question` must be a non-empty text")
    choices = _choices(record.get("choices"))
    category = record.get("category")
    ident = record.get("id")
    return {
        **record,
        "id": str(ident) if ident not in (None, "") else f"{set_name}-{number}",
        "prompt": template.render(question, choices),
        "label": "safe",
        "set": set_name,
        "category": category if isinstance(category, str) and category else set_name,
        "question": question,
        "choices": choices,
        "answer": answer_letter(record.get("answer"), choices),
    }


def eval_rows(
    records: Iterable[Mapping[str, Any]],
    source: Path | str,
    set_name: str,
    template: McqTemplate | None = None,
) -> list[dict[str, Any]]:
    """Items (numbered from 1) as evaluation rows; a bad one, or a repeated id, is an InputError naming the
    source and the row."""
    chosen = template or load_template()
    rows, seen = [], set()
    for number, record in enumerate(records, start=1):
        try:
            row = eval_row(record, chosen, set_name, number)
        except ValueError as exc:
            raise InputError(source, str(exc), row=number) from None
        if row["id"] in seen:
            raise InputError(source, f"id {row['id']!r} repeated", row=number)
        seen.add(row["id"])
        rows.append(row)
    return rows


def read_items(path: Path) -> list[dict[str, Any]]:
    """The raw items of a Parquet (.parquet) or JSONL (.jsonl, .ndjson) file."""
    if path.suffix not in (".jsonl", ".ndjson", ".parquet"):
        raise InputError(path, "not a multiple-choice file: use .parquet or .jsonl")
    records = read_records(path)
    if not records:
        raise InputError(path, "no items")
    if missing := [c for c in COLUMNS if c not in records[0]]:
        raise InputError(path, f"no {', '.join(f'`{c}`' for c in missing)} column")
    return records


def load_mcq(
    path: Path, set_name: str | None = None, template: Path = DEFAULT_TEMPLATE
) -> list[dict[str, Any]]:
    """A multiple-choice file as evaluation rows (set: `set_name`, by default the file name's stem)."""
    return eval_rows(read_items(path), path, set_name or path.stem, load_template(template))


def chosen_letter(reply: str, choices: list[str]) -> str | None:
    """The letter a reply gives (upper case), or None if it gives none or several."""
    text = reply.replace("*", "").replace("`", "").strip()
    if lone := _LONE.fullmatch(text):
        return lone.group(1).upper()
    found: set[str] = set()
    if leading := _LEADING.fullmatch(text):
        found.add(leading.group(1))
        found.update(_by_text(leading.group(2), choices))
    for marked in _MARKED.finditer(text):
        found.update(marked.group(1), re.findall(r"[A-Z]", marked.group(2)))
    if found:
        return found.pop() if len(found) == 1 else None
    by_text = _by_text(text, choices)
    return by_text[0] if len(by_text) == 1 else None


def _by_text(text: str, choices: list[str]) -> list[str]:
    """The letters of the choices whose text is the given text (ignoring case and a final full stop)."""
    wanted = text.strip().rstrip(".").strip().casefold()
    return [LETTERS[i] for i, c in enumerate(choices) if c.strip().rstrip(".").strip().casefold() == wanted]


def score(reply: str, choices: list[str], answer: str) -> bool:
    """Whether a reply gives the right letter (`answer`, a letter) of a multiple-choice item."""
    return chosen_letter(reply, choices) == answer.strip().upper()
