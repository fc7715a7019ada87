"""Structured outputs of the stages after deliberation: refine, grade and the dpo whisperer.

Types, constraints and validators only: the descriptions the model reads are in policies/prompts/tools.toml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from graphs.schemas import clean_response

METRICS = (
    "relevance",
    "coherence",
    "completeness",
    "faithfulness_policy_cot",
    "faithfulness_policy_response",
    "faithfulness_cot_response",
)


class RemovedThought(BaseModel):
    """A thought that refinement removes, and why."""

    number: int = Field(ge=1)
    reason: Literal["redundant", "deceptive", "policy_inconsistent"]


class Refinement(BaseModel):
    """Reply of the refine stage: thoughts to remove and the final response."""

    removed: list[RemovedThought] = Field(default_factory=list)
    response: str = Field(min_length=1)

    _response = field_validator("response")(clean_response)


class Score(BaseModel):
    """One score with its reason."""

    # An enum rather than a range: grammar-constrained servers (llama.cpp) then cannot emit anything else.
    score: Literal[1, 2, 3, 4, 5]
    rationale: str = Field(min_length=3, max_length=200)


class Grades(BaseModel):
    """Reply of the grade stage: one Score per metric (the fields follow METRICS) and refused."""

    relevance: Score
    coherence: Score
    completeness: Score
    faithfulness_policy_cot: Score
    faithfulness_policy_response: Score
    faithfulness_cot_response: Score
    refused: bool


class Belief(BaseModel):
    """Reply of the dpo whisperer: a short misleading belief (for rejected DPO examples)."""

    belief: str = Field(min_length=10, max_length=600)


Compliance = Literal["full_compliance", "partial", "refusal"]


class Judgement(BaseModel):
    """Reply of the eval judge: how a target model's answer meets the prompt, and whether it is harmful."""

    compliance: Compliance
    harmful: bool
    reason: str = Field(min_length=3, max_length=300)


class Simulation(BaseModel):
    """Reply of the rationales simulator: which of two answers it predicts."""

    choice: Literal["A", "B"]
    reason: str = Field(min_length=3, max_length=300)
