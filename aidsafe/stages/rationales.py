"""Stage `rationales`: a rationale for each row's answer by contrastive decoding, a counterfactual one, and
the simulator's check of both.

Per row (aidsafe.answers says which answers): the teacher (a local logit model, aidsafe.teacher) decodes a
rationale for the true answer, contrasted with the perturbed answer (aidsafe.contrastive), and one for a
counterfactual (wrong) answer chosen at random, contrasted with the true one. The simulator role then picks,
between the true and a wrong answer (in a seeded order), the one the rationale alone supports and the one the
question alone suggests, and the one the counterfactual rationale supports; the report turns these into the
leakage-adjusted gain (aidsafe.rationale_report). Standalone: `aidsafe rationales`, not part of `run`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa

from aidsafe.answers import Answers, counterfactual_answer, perturbed_answer, row_answers
from aidsafe.config import Settings
from aidsafe.contrastive import Decoded, decode
from aidsafe.errors import AnswerMissing, ConfigError, ModelError, StageFailed
from aidsafe.partitions import RowRef
from aidsafe.rationale_prompt import RationalePrompt
from aidsafe.schemas import Simulation
from aidsafe.stage import INPUT, RowContext, RowStage
from aidsafe.stages.common import now
from aidsafe.teacher import TEACHER_LOCK, decode_settings, rationale_prompt, rationale_prompt_path, teacher
from aidsafe.usage import USAGE

NAME = "rationales"
COLUMNS = pa.schema(
    [
        ("rationale_answer_source", pa.string()),
        ("rationale_answer", pa.string()),
        ("perturbed_answer", pa.string()),
        ("rationale", pa.string()),
        ("rationale_mode", pa.string()),
        ("rationale_perturbation", pa.string()),
        ("rationale_gap", pa.float64()),
        ("rationale_tokens", pa.int32()),
        ("rationale_stop", pa.string()),
        ("rationale_seconds", pa.float64()),
        ("counterfactual_answer", pa.string()),
        ("counterfactual_rationale", pa.string()),
        ("counterfactual_gap", pa.float64()),
        ("counterfactual_tokens", pa.int32()),
        ("counterfactual_seconds", pa.float64()),
        ("simulated_with_rationale", pa.bool_()),
        ("simulated_question_only", pa.bool_()),
        ("simulated_counterfactual", pa.bool_()),
        ("model_teacher", pa.string()),
        ("model_simulator", pa.string()),
        ("usage_simulator", USAGE),
        ("rationalized_at", pa.timestamp("us", tz="UTC")),
    ]
)


@asynccontextmanager
async def cpu_turn(settings: Settings, role: str | None = None) -> AsyncIterator[None]:
    """Hold the teacher's lock: while decoding, and while a role on the embedded server (the same CPU)
    answers; a remote role runs beside the teacher."""
    if role is not None and not settings.roles[role].embedded:
        yield
        return
    await asyncio.to_thread(TEACHER_LOCK.acquire)
    try:
        yield
    finally:
        TEACHER_LOCK.release()


async def rationale_for(
    settings: Settings, prompt: RationalePrompt, question: str, answer: str, contrast: str
) -> Decoded:
    """The teacher's rationale of `answer`, contrasted with the answer `contrast` (StageFailed on errors)."""
    try:
        model = await asyncio.to_thread(teacher, settings)
        true_context = model.tokenize(prompt.context(question, answer))
        perturbed_context = model.tokenize(prompt.context(question, contrast))
        chosen = decode_settings(settings, prompt.stop)
        async with cpu_turn(settings):
            return await asyncio.to_thread(decode, model, true_context, perturbed_context, chosen)
    except (ModelError, ConfigError) as exc:
        raise StageFailed(NAME, exc) from exc


def _answers(row: RowRef, settings: Settings, prompt: RationalePrompt) -> tuple[Answers, str]:
    try:
        answers = row_answers(row.values, settings.rationale_answer, prompt)
        return answers, perturbed_answer(answers, settings.rationale_perturbation, prompt)
    except AnswerMissing as exc:
        raise StageFailed(NAME, exc) from exc


def choices(true: str, wrong: str, seed: int, row_id: str) -> tuple[str, str]:
    """The simulator's options as text, and the letter of the true answer (order seeded by the row)."""
    first_is_true = random.Random(f"choices:{seed}:{row_id}").random() < 0.5
    a, b = (true, wrong) if first_is_true else (wrong, true)
    return f"A: {a}\nB: {b}", "A" if first_is_true else "B"


async def _simulate(ctx: RowContext, stage: str, data: dict[str, Any]) -> str:
    async with cpu_turn(ctx.settings, "simulator"):
        return (await ctx.calls.ask("simulator", stage, Simulation, data)).choice


async def simulations(
    ctx: RowContext, row: RowRef, answers: tuple[str, str], rationales: tuple[str, str | None]
) -> dict[str, Any]:
    """Whether the simulator picks the answer each rationale supports, and the true one from the question."""
    (true, wrong), (factual, counterfactual) = answers, rationales
    options, letter = choices(true, wrong, ctx.settings.rationale_seed, row.id)
    with_rationale = await _simulate(ctx, "simulate_rationale", {"rationale": factual, "choices": options})
    question = await _simulate(ctx, "simulate_question", {"prompt": row.prompt, "choices": options})
    result = {
        "simulated_with_rationale": with_rationale == letter,
        "simulated_question_only": question == letter,
    }
    if counterfactual is not None:
        data = {"rationale": counterfactual, "choices": options}
        result["simulated_counterfactual"] = await _simulate(ctx, "simulate_rationale", data) != letter
    return result


def _decoded(prefix: str, text_column: str, decoded: Decoded) -> dict[str, Any]:
    return {
        text_column: decoded.text,
        f"{prefix}gap": decoded.mean_gap,
        f"{prefix}tokens": len(decoded.tokens),
        f"{prefix}seconds": round(decoded.seconds, 3),
    }


async def process(row: RowRef, ctx: RowContext) -> dict[str, Any]:
    settings = ctx.settings
    prompt = rationale_prompt(settings)
    answers, perturbed = _answers(row, settings, prompt)
    factual = await rationale_for(settings, prompt, row.prompt, answers.true, perturbed)
    counter = counterfactual_answer(answers, settings.rationale_seed, row.id)
    columns: dict[str, Any] = {
        "rationale_answer_source": answers.source, "rationale_answer": answers.true,
        "perturbed_answer": perturbed, "rationale_mode": settings.rationale_decoding,
        "rationale_perturbation": settings.rationale_perturbation, "rationale_stop": factual.stopped,
        "counterfactual_answer": counter, **_decoded("rationale_", "rationale", factual),
    }  # fmt: skip
    counterfactual = None
    if counter is not None:
        contrast = answers.true if settings.rationale_perturbation == "opposite" else perturbed
        decoded = await rationale_for(settings, prompt, row.prompt, counter, contrast)
        columns |= _decoded("counterfactual_", "counterfactual_rationale", decoded)
        counterfactual = decoded.text
    wrong = counter if counter is not None else (perturbed if answers.wrong else None)
    if wrong is not None:
        columns |= await simulations(ctx, row, (answers.true, wrong), (factual.text, counterfactual))
    return columns | {
        "model_teacher": (await asyncio.to_thread(teacher, settings)).name,
        "model_simulator": ctx.calls.model_name("simulator"),
        "usage_simulator": ctx.calls.used(),
        "rationalized_at": now(),
    }


def _roles(settings: Settings) -> list[str]:
    return ["simulator"]


RATIONALES = RowStage(
    name=NAME,
    help="rationales for known answers by contrastive decoding on a local model, with counterfactual "
    "rationales and the simulator's check (INPUT -> OUTPUT/rationales)",
    reads=INPUT,
    output="rationales",
    prompts=("simulate_rationale", "simulate_question"),
    roles=_roles,
    columns=COLUMNS,
    process=process,
    in_run="never",
    input_values=True,
    setting_files=lambda settings: (rationale_prompt_path(settings),),  # the teacher's few-shot prompt
)
