"""The pipeline stages, by name: generate (AIDSAFE 1-3), refine, grade, baseline (LLM_ZS), dpo."""

from __future__ import annotations

from aidsafe.runner import Stage
from aidsafe.stages.baseline import BaselineStage
from aidsafe.stages.dpo import DpoStage
from aidsafe.stages.generate import GenerateStage
from aidsafe.stages.grade import GradeStage
from aidsafe.stages.refine import RefineStage

_ALL: tuple[Stage, ...] = (GenerateStage(), RefineStage(), GradeStage(), BaselineStage(), DpoStage())
STAGES: dict[str, Stage] = {stage.name: stage for stage in _ALL}
