"""Self-grading: rows whose grader is the same model as one that wrote them (intent, drafter, agents, refiner;
for the baseline, the baseline model). Read from the model columns the rows carry, so a rerun that changed
one role is judged by what graded each row. The report and the dataset card say so prominently.

Model names are compared case-insensitively on their last path segment ("Qwen/Qwen2.5-7B" is "qwen2.5-7b"):
the same model served by another server is still the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SelfGrading:
    """How many rows of a set were graded by a model that also wrote them, and which models and roles."""

    rows: int
    total: int
    graders: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return self.rows > 0


def same_model(a: object, b: object) -> bool:
    """Whether two model names name the same model (case and a provider/path prefix aside)."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return False
    return a.strip().rsplit("/", 1)[-1].casefold() == b.strip().rsplit("/", 1)[-1].casefold()


def _listed(value: Any) -> list[Any]:
    return [] if value is None else list(value)


def writers(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(role, model) of every model that wrote a row: generation and refinement, or the baseline."""
    if "model_baseline" in row:
        return [("baseline", row["model_baseline"])]
    models = row.get("models") or {}
    agents = _listed(models.get("agents"))
    return [
        ("intent", models.get("intent")),
        ("drafter", models.get("drafter")),
        *((f"agent{n}", model) for n, model in enumerate(agents, start=1)),
        ("refiner", row.get("model_refiner")),
    ]


def self_graded_roles(row: Mapping[str, Any]) -> list[str]:
    """The roles whose model also graded this row."""
    return [role for role, model in writers(row) if same_model(model, row.get("model_grader"))]


def self_grading(rows: pd.DataFrame) -> SelfGrading:
    """Self-grading over a set of graded rows (none found when the rows do not record their models)."""
    if rows.empty or "model_grader" not in rows.columns:
        return SelfGrading(0, len(rows))
    columns = [c for c in ("models", "model_refiner", "model_baseline", "model_grader") if c in rows.columns]
    graders: set[str] = set()
    roles: set[str] = set()
    count = 0
    for row in rows[columns].to_dict("records"):
        found = self_graded_roles(row)
        if found:
            count += 1
            graders.add(str(row["model_grader"]))
            roles.update(found)
    return SelfGrading(count, len(rows), tuple(sorted(graders)), tuple(sorted(roles, key=_rank)))


def _rank(role: str) -> tuple[int, int]:
    """Roles in pipeline order: intent, drafter, agent1..agentN, refiner (and baseline)."""
    if role.startswith("agent"):
        return 2, int(role.removeprefix("agent") or 0)
    return {"intent": 0, "drafter": 1, "refiner": 3}.get(role, 4), 0


def warning(found: SelfGrading, what: str) -> str:
    """One sentence for a report or card: `what` names the rows (e.g. "graded rows")."""
    graders = ", ".join(f"`{g}`" for g in found.graders)
    return (
        f"**Self-graded:** {found.rows} of {found.total} {what} were graded by {graders}, the same model as "
        f"their {', '.join(found.roles)}: the scores are a model judging its own output and tend to be too "
        "kind. Give the grader its own model (`[roles.grader]`) and qualify it first with "
        "`aidsafe grade --calibrate data/calibration/grader-calibration.jsonl --output DIR`."
    )
