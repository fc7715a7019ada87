"""Structured outputs of the LLM roles. Every model reply is validated against one of these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Thought = str


def _clean_thoughts(value: list[str]) -> list[str]:
    thoughts = [t.strip() for t in value if t and t.strip()]
    if not thoughts:
        raise ValueError("at least one non-empty thought is required")
    return thoughts


class Intent(BaseModel):
    """One explicit or implicit intent behind the user prompt."""

    description: str = Field(min_length=3, description="The intent, in one sentence")
    kind: Literal["benign", "possibly_harmful"] = Field(
        description="benign, or possibly_harmful when fulfilling it could violate a policy"
    )


class IntentList(BaseModel):
    """The intents behind the user prompt: the explicit request and any implicit goals."""

    intents: list[Intent] = Field(min_length=1, max_length=8, description="One to five intents")


class Draft(BaseModel):
    """A policy-embedded chain of thought and the response to the user that follows from it."""

    thoughts: list[str] = Field(
        min_length=1, max_length=30, description="The chain of thought, one short reasoning step per item"
    )
    response: str = Field(min_length=1, description="The final answer to the user")

    _thoughts = field_validator("thoughts")(_clean_thoughts)

    @field_validator("response")
    @classmethod
    def _response_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("response must not be blank")
        return value.strip()


class Verdict(BaseModel):
    """A deliberation agent's review: confirm the CoT and response complete, or revise them."""

    complete: bool = Field(
        description="true if the CoT and response already follow every policy and need no change"
    )
    feedback: str = Field(min_length=3, description="What is wrong or missing, or why it is complete")
    thoughts: list[str] | None = Field(
        None, description="The corrected chain of thought in full; required when complete is false"
    )
    response: str | None = Field(
        None, description="The corrected response in full; required when complete is false"
    )

    @model_validator(mode="after")
    def _revision_present(self) -> Verdict:
        if not self.complete:
            if not self.thoughts or not any(t.strip() for t in self.thoughts):
                raise ValueError("thoughts are required when complete is false")
            if not self.response or not self.response.strip():
                raise ValueError("response is required when complete is false")
            self.thoughts = _clean_thoughts(self.thoughts)
            self.response = self.response.strip()
        return self
