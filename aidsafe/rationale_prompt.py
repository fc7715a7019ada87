"""The teacher's few-shot prompt of the rationales stage (policies/prompts/rationale.toml), validated on load.

It is plain text for a local model to continue, not a chat prompt: `context(question, answer)` is the header,
the worked examples and the row's question and answer, ending where the rationale begins. The stage renders it
twice per rationale, with the true answer and with the perturbed one.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aidsafe.tomlfile import read_model

FILE_NAME = "rationale.toml"
EXAMPLE_VARIABLES = ("question", "answer", "rationale")


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=3, description="An example question")
    answer: str = Field(min_length=1, description="Its answer")
    rationale: str = Field(min_length=3, description="Why that answer, as the teacher should write it")


class RationalePrompt(BaseModel):
    """The schema of rationale.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = Field(description="Text before the examples")
    example: str = Field(description="One example: ${question}, ${answer}, ending with ${rationale}")
    separator: str = Field(min_length=1, description="Between the header and the examples")
    stop: list[str] = Field(min_length=1, description="Decoding ends at the first of these strings")
    empty_answer: str = Field(min_length=1, description="The perturbed answer of --perturbation empty")
    decisions: list[str] = Field(min_length=2, max_length=2, description="The two decisions of safety data")
    opposite: dict[str, str] = Field(description="Per decision: the text of the answer that makes it")
    examples: list[Example] = Field(min_length=1, description="The worked examples, in order")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        template = Template(self.example)
        if not template.is_valid() or set(template.get_identifiers()) != set(EXAMPLE_VARIABLES):
            raise ValueError(f"example: must use exactly ${{{'}, ${'.join(EXAMPLE_VARIABLES)}}}")
        if not self.example.endswith("${rationale}"):
            raise ValueError("example: must end with ${rationale} (the teacher writes what follows)")
        if any(not s for s in self.stop):
            raise ValueError("stop: empty string")
        if len(set(self.decisions)) != 2:
            raise ValueError("decisions: must be two different words")
        if set(self.opposite) != set(self.decisions):
            raise ValueError(f"opposite: must give a text for each of {self.decisions}")
        return self

    def _example(self, question: str, answer: str, rationale: str) -> str:
        return Template(self.example).substitute(question=question, answer=answer, rationale=rationale)

    def context(self, question: str, answer: str) -> str:
        """The text the teacher continues with the rationale of `answer` to `question`."""
        shots = [self._example(e.question, e.answer, e.rationale) for e in self.examples]
        return self.separator.join([self.header, *shots, self._example(question, answer, "")])

    def other_decision(self, decision: str) -> str:
        first, second = self.decisions
        return second if decision == first else first


def load_rationale_prompt(path: Path) -> RationalePrompt:
    """The prompt file, validated (PolicyError naming the file and the field)."""
    return read_model(path, RationalePrompt, "rationale prompt")
