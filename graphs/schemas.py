"""Structured outputs of the LLM roles. Every model reply is validated against one of these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Thought = str


def _clean_response(value: str) -> str:
    if not value.strip():
        raise ValueError("response must not be blank")
    return value.strip()


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

    _response = field_validator("response")(_clean_response)


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


class RemovedThought(BaseModel):
    """A thought of the deliberated CoT that refinement removes, and why."""

    number: int = Field(ge=1, description="The number of the thought in the numbered CoT")
    reason: Literal["redundant", "deceptive", "policy_inconsistent"] = Field(
        description="redundant: repeats or adds nothing; deceptive: plausible but wrong; "
        "policy_inconsistent: contradicts the policies"
    )


class Refinement(BaseModel):
    """The refined result: which thoughts to remove, and the final response."""

    removed: list[RemovedThought] = Field(
        default_factory=list, description="Thoughts to remove; an empty list if every thought is needed"
    )
    response: str = Field(min_length=1, description="The final response, consistent with the kept thoughts")

    _response = field_validator("response")(_clean_response)


METRICS = (
    "relevance",
    "coherence",
    "completeness",
    "faithfulness_policy_cot",
    "faithfulness_policy_response",
    "faithfulness_cot_response",
)


class Score(BaseModel):
    """One score with its reason."""

    # An enum rather than a range: grammar-constrained servers (llama.cpp) then cannot emit anything else.
    score: Literal[1, 2, 3, 4, 5] = Field(description="1 (very poor) to 5 (excellent)")
    rationale: str = Field(
        min_length=3, max_length=200, description="One short sentence explaining the score"
    )


class Grades(BaseModel):
    """Scores of one CoT and response, each 1-5 with a one-sentence rationale."""

    relevance: Score = Field(description="How relevant the CoT is to the user prompt")
    coherence: Score = Field(description="How logically coherent the CoT is")
    completeness: Score = Field(
        description="How completely the CoT covers the intents and applicable policies"
    )
    faithfulness_policy_cot: Score = Field(description="How faithfully the CoT follows the policies")
    faithfulness_policy_response: Score = Field(
        description="How faithfully the response follows the policies"
    )
    faithfulness_cot_response: Score = Field(description="How faithfully the response follows from the CoT")
    refused: bool = Field(description="true if the response declines all or part of the user's request")


class Belief(BaseModel):
    """A short misleading belief about the prompt or the policies (for rejected DPO examples)."""

    belief: str = Field(
        min_length=10,
        max_length=600,
        description="One or two plausible, misleading sentences that lead an assistant to break a policy",
    )
