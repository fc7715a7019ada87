"""Everything that can be checked before any Prefect machinery or model starts: options, settings, policies,
prompts, the context budget, the input and the output directory. The CLI runs these first, so a mistake is
one error line within a second, not a traceback minutes later; the flows run the path checks again for
deployment runs.
"""

from __future__ import annotations

import glob
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aidsafe.config import Options, Settings
from aidsafe.errors import ConfigError, InputError
from aidsafe.partitions import REQUIRED_COLUMNS, discover
from aidsafe.policies import load_policies
from aidsafe.prompts import PromptSet, load_prompts
from aidsafe.stages.generate import agent_focus

CHARS_PER_TOKEN = 3.5  # a conservative estimate for English text
REPLY_MARGIN = 256  # tokens for the row's own text at least


def check_settings(options: Options) -> Settings:
    """Resolve the settings, load policies and prompts, check the context budget: any error shows now."""
    settings = options.load()
    prompts = load_prompts(settings.prompts_dir, load_policies(settings.policies_dir).render())
    check_context(settings, prompts)
    agent_focus(settings, prompts)  # every agent's focus names a focus file
    return settings


def check_context(settings: Settings, prompts: PromptSet) -> None:
    """The policies and the longest stage instructions, sent with every call, must leave room for a reply."""
    limit = settings.embedded.n_ctx if settings.uses_embedded else settings.context_tokens
    longest = max(len(system) for system in prompts.systems)
    reply = max(endpoint.max_tokens for endpoint in settings.roles.values())
    tokens = int(longest / CHARS_PER_TOKEN)
    if tokens + reply + REPLY_MARGIN > limit:
        where = "embedded.n_ctx" if settings.uses_embedded else "context_tokens"
        raise ConfigError(
            f"{settings.policies_dir}: the policies with the longest stage instructions are {longest:,} "
            f"characters (about {tokens:,} tokens), sent with every call; with max_tokens {reply} they do "
            f"not fit the model context of {limit:,} tokens ({where}): shorten the policies or use a larger "
            "model"
        )


def _readable(path: Path) -> str | None:
    """Why a partition cannot be used (None if it can): unreadable, or no string id/prompt columns."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        return f"{path}: not a readable Parquet file ({exc})"
    for name in REQUIRED_COLUMNS:
        if name not in schema.names or (
            not pa.types.is_string(schema.field(name).type)
            and not (pa.types.is_large_string(schema.field(name).type))
        ):
            return f"{path}: no string column {name!r}"
    return None


def check_input(source: str) -> list[Path]:
    """The input exists and a partition is usable (a bad partition alone is reported later, not fatal)."""
    paths = discover(source)
    problems = [p for p in map(_readable, paths) if p]
    if len(problems) == len(paths):
        raise InputError(source, f"no usable partition; {problems[0]}")
    return paths


def _input_dirs(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return [path.resolve()]
    if path.is_file():
        return []
    fixed = [p for p in Path(source).parts if not glob.has_magic(p)]
    return [Path(*fixed).resolve()] if fixed else []


def check_output(output: Path, input: str | None = None) -> None:
    """The output directory is a directory, writable, and not inside the input (it would be read back)."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: is a file, not a directory")
    resolved = output.resolve()
    for directory in _input_dirs(input) if input else []:
        if resolved == directory or directory in resolved.parents:
            raise ConfigError(
                f"--output {output}: inside the input {input}; the next run would read its outputs as input"
            )
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as exc:
        raise ConfigError(f"--output {output}: not writable ({exc.strerror or exc})") from exc
