"""Structured outputs of the deliberation graph. Every model reply of a graph node is validated against one.

Types, constraints and validators only: the descriptions the model reads are in policies/prompts/tools.toml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator


def clean_response(value: str) -> str:
    if not value.strip():
        raise ValueError("response must not be blank")
    return value.strip()


def clean_thoughts(value: list[str]) -> list[str]:
    thoughts = [t.strip() for t in value if t and t.strip()]
    if not thoughts:
        raise ValueError("at least one non-empty thought is required")
    return thoughts


class Intent(BaseModel):
    """One intent behind the user prompt."""

    description: str = Field(min_length=3)
    source: Literal["explicit", "implicit"]
    kind: Literal["benign", "possibly_harmful"]


class IntentList(BaseModel):
    """Reply of the intent stage."""

    intents: list[Intent] = Field(min_length=1, max_length=8)


class Draft(BaseModel):
    """Reply of the draft (and baseline) stage: a chain of thought and the response."""

    thoughts: list[str] = Field(min_length=1, max_length=30)
    response: str = Field(min_length=1)

    _thoughts = field_validator("thoughts")(clean_thoughts)

    _response = field_validator("response")(clean_response)


class Verdict(BaseModel):
    """Reply of one deliberation turn: complete, or a full revision."""

    complete: bool
    feedback: str = Field(min_length=3)
    thoughts: list[str] | None = None
    response: str | None = None

    @model_validator(mode="after")
    def _revision_present(self) -> Verdict:
        if not self.complete:
            if not self.thoughts or not any(t.strip() for t in self.thoughts):
                raise ValueError("thoughts are required when complete is false")
            if not self.response or not self.response.strip():
                raise ValueError("response is required when complete is false")
            self.thoughts = clean_thoughts(self.thoughts)
            self.response = self.response.strip()
        return self
