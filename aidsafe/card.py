"""The dataset card (README.md) written beside every export."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import aidsafe
from aidsafe.config import PROJECT_ROOT
from aidsafe.errors import PolicyError
from aidsafe.policies import load_policies
from aidsafe.report_files import read_failures, stored_thresholds
from aidsafe.schemas import METRICS
from aidsafe.self_grading import self_grading, warning
from aidsafe.thresholds import are_defaults, resolve_thresholds

XSTEST_NOTE = (
    'Prompts from XSTest (Röttger et al., NAACL 2024, "XSTest: A Test Suite for Identifying Exaggerated '
    'Safety Behaviours in Large Language Models"), licensed CC BY 4.0; keep this attribution when you share '
    "the data."
)
ADVBENCH_NOTE = (
    "Harmful prompts from AdvBench, harmful_behaviors (Zou et al. 2023, Universal and Transferable "
    "Adversarial Attacks on Aligned Language Models, arXiv:2307.15043), MIT licence, Copyright (c) 2023 Andy "
    "Zou: keep the copyright and permission notice (`data/ADVBENCH_LICENSE` in aidsafe) with the data. "
    "Content warning: each of them asks for harmful content."
)
DOLLY_NOTE = (
    "Benign prompts from databricks-dolly-15k (Conover et al. 2023, Databricks), Copyright (2023) "
    "Databricks, Inc., licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/; some material "
    "derives from Wikipedia, CC BY-SA 3.0): give this attribution, and share a dataset containing these "
    "prompts under the same licence (ShareAlike)."
)
# The licence note of the prompts whose ids start with each prefix (as the converters in scripts/ write them).
LICENCE_NOTES = {"xstest-": XSTEST_NOTE, "advbench-": ADVBENCH_NOTE, "dolly-": DOLLY_NOTE}


def code_version() -> str:
    """aidsafe's version, with the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{aidsafe.__version__} (git {commit})" if commit else aidsafe.__version__


def _summaries(output_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((output_dir / "summary").glob("*.json")):
        found[path.stem] = json.loads(path.read_text())
    return found


def _policy_section(summaries: dict[str, dict[str, Any]], policy_sets: set[str]) -> str:
    settings = summaries.get("generate", {}).get("settings", {})
    lines = [f"Policy set hash(es) recorded in the rows: {', '.join(sorted(policy_sets)) or 'n/a'}.\n"]
    try:
        policies = load_policies(Path(settings.get("policies_dir", "")))
    except PolicyError:
        return lines[0] + "\n(The policy texts were not found where the run read them.)\n"
    if policies.hash not in policy_sets:
        lines.append(
            f"\n(The policy directory now hashes to {policies.hash}: the texts below may have changed.)\n"
        )
    lines += [f"\n### {p.title} (`{p.id}`)\n\n{p.text.strip()}\n" for p in policies.policies]
    return "".join(lines)


def _models(rows: pd.DataFrame, summaries: dict[str, dict[str, Any]]) -> str:
    roles: dict[str, Any] = {}
    for summary in summaries.values():
        roles |= summary.get("settings", {}).get("roles", {})
    used = {c: sorted(set(rows[c].dropna())) for c in rows.columns if c.startswith("model_")}
    if "models" in rows.columns and not rows.empty:
        generation = rows["models"].iloc[0]
        used["models (generate)"] = [f"intent {generation['intent']}, drafter {generation['drafter']}, "
                                     f"agents {', '.join(generation['agents'])}"]  # fmt: skip
    lines = [f"- `{role}`: {ident['model']} on {ident['server']}" for role, ident in sorted(roles.items())]
    lines += [f"- models recorded in the rows, `{c}`: {', '.join(v)}" for c, v in used.items()]
    return "\n".join(lines) + "\n"


def _scores(rows: pd.DataFrame) -> str:
    if rows.empty or "score_relevance" not in rows.columns:
        return "(no graded rows)\n"
    lines = ["| metric | mean (1-5) |", "|---|---|"]
    lines += [f"| {m} | {rows[f'score_{m}'].mean():.2f} |" for m in METRICS]
    return "\n".join(lines) + "\n"


DESCRIPTIONS = {
    "sft": (
        "Supervised fine-tuning conversations",
        "TRL's conversational language-modelling format (`messages`)",
        "",
    ),
    "dpo": (
        "Preference pairs (chosen / rejected)",
        "TRL's conversational preference format (`prompt`, `chosen`, `rejected`)",
        " Rejected answers come from a misleading belief, written by an ear-whisperer agent and put before "
        "the prompt, answered by the responder model as one ordinary user message; the chosen answer is the "
        "refined one. A pair is kept only when the chosen CoT's policy faithfulness beats the rejected one's "
        "by the margin and the chosen answer meets the score thresholds.",
    ),
}


def front_matter(counts: dict[str, int], suffix: str, config: str) -> str:
    """The `datasets` config: only the splits that have rows (an empty split is not written). Its name carries
    the content hash: `datasets` caches a local directory by its name and config, not by its files."""
    files = "".join(f"  - split: {n}\n    path: {n}.{suffix}\n" for n, rows in counts.items() if rows)
    return f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n"


def loading_section(counts: dict[str, int], fmt: str, suffix: str) -> str:
    files = ", ".join(f'"{n}": "{n}.{suffix}"' for n, rows in counts.items() if rows)
    builder = "parquet" if suffix == "parquet" else "json"
    code = f'from datasets import load_dataset\nds = load_dataset("{builder}", data_files={{{files}}})'
    empty = [n for n, rows in counts.items() if not rows]
    note = f" Splits without rows are not written: {', '.join(empty)}." if empty else ""
    return f'```python\n{code}\n```\n\nOr `load_dataset("<this directory>")`. {fmt}.{note}\n'


def left_out_section(output_dir: Path, left_out: dict[str, int]) -> str:
    failures = read_failures(output_dir)
    lines = [f"- {reason}: {n}" for reason, n in left_out.items()]
    if not failures.empty:
        lines += [
            f"- failed at {flow}/{stage}: {n}"
            for (flow, stage), n in failures.groupby(["flow", "stage"]).size().items()
        ]
    return "\n".join(lines or ["- nothing"]) + "\n"


def _settings(summaries: dict[str, dict[str, Any]]) -> str:
    s = summaries.get("generate", {}).get("settings", {})
    dpo = summaries.get("dpo", {}).get("settings", s)
    return (
        f"{s.get('agents', 'n/a')} deliberation agents, a budget of {s.get('max_rounds', 'n/a')} turns; "
        f"DPO: up to {dpo.get('dpo_attempts', 'n/a')} attempts, rejected when CoT policy faithfulness <= "
        f"{dpo.get('dpo_max_score', 'n/a')} and at least {dpo.get('dpo_margin', 'n/a')} below the chosen "
        f"CoT's; the whisperer asked again up to {dpo.get('dpo_whisper_retries', 'n/a')} times after a "
        "refusal.\n"
    )


def licence_section(rows: pd.DataFrame) -> str:
    """The licence notes of the sources the rows' prompts come from (by id prefix)."""
    ids = rows["id"].astype(str) if not rows.empty else pd.Series([], dtype=str)
    found = [note for prefix, note in LICENCE_NOTES.items() if ids.str.startswith(prefix).any()]
    return "\n\n".join(found) or "The prompts keep the licence of their source; check it before sharing."


def _self_graded(rows: pd.DataFrame) -> list[str]:
    """A prominent warning when the exported rows were graded by a model that also wrote them."""
    found = self_grading(rows)
    return [f"> {warning(found, 'exported rows')}\n"] if found.found else []


def _thresholds(output_dir: Path) -> str:
    """The score thresholds the kept rows meet (those of the run's last report)."""
    thresholds = resolve_thresholds(stored_thresholds(output_dir))
    limits = ", ".join(f"`{m}` >= {v}" for m, v in thresholds.items()) or "none (every graded row kept)"
    which = " (the defaults)" if are_defaults(thresholds) else ""
    return f"Score thresholds of the kept rows: {limits}{which}.\n"


def render_card(
    kind: str,
    rows: pd.DataFrame,
    counts: dict[str, int],
    output_dir: Path,
    left_out: dict[str, int],
    suffix: str = "parquet",
    config: str = "default",
    notes: Sequence[str] = (),
) -> str:
    """The dataset card of an export (kind: sft or dpo); notes: further sections, before the licence."""
    what, fmt, extra = DESCRIPTIONS[kind]
    summaries = _summaries(output_dir)
    licence = licence_section(rows)
    split_table = "\n".join(["| split | rows |", "|---|---|", *(f"| {n} | {c} |" for n, c in counts.items())])
    policy_sets = set(rows["policy_set"].dropna()) if "policy_set" in rows.columns else set()
    sections = [
        front_matter(counts, suffix, config),
        f"# aidsafe {kind.upper()} dataset\n\n{what} with policy-embedded chains of thought, made by aidsafe "
        f"{code_version()} with the AIDSAFE recipe (intent decomposition, a first draft, multi-agent "
        f"deliberation over written safety policies, refinement, auto-grading).{extra}\n",
        *_self_graded(rows),
        f"## Splits\n\nBy distinct prompt (seeded): no prompt is in two splits.\n\n{split_table}\n",
        f"## How to load\n\n{loading_section(counts, fmt, suffix)}",
        f"## How it was made\n\nModels per role:\n\n{_models(rows, summaries)}",
        f"Settings: {_settings(summaries)}",
        f"## Scores of the exported rows\n\n{_scores(rows)}\n{_thresholds(output_dir)}",
        f"## Left out\n\n{left_out_section(output_dir, left_out)}",
        *notes,
        f"## Licence of the inputs\n\n{licence}\n",
        f"## Policies\n\n{_policy_section(summaries, policy_sets)}",
    ]
    return "\n".join(sections)
