"""Bad input, one test per class: a clear error naming the file (and row); the other partitions finish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aidsafe.cli import main
from aidsafe.config import DEFAULT_POLICIES, Options
from aidsafe.errors import PartitionsFailed
from flows.stages import FLOWS
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI

pytestmark = pytest.mark.usefixtures("prefect_api", "clean_env")
GOOD = [{"id": "g1", "prompt": "How do I boil an egg?"}]

generate = FLOWS["generate"]


def write_bad(path: Path, kind: str) -> None:
    """One bad partition of the given class."""
    if kind == "corrupt":
        path.write_bytes(b"PAR1 this is not a parquet file")
        return
    tables = {
        "missing_id": pa.table({"prompt": ["Q?"]}),
        "missing_prompt": pa.table({"id": ["b1"]}),
        "wrong_type": pa.table({"id": ["b1"], "prompt": pa.array([42], pa.int64())}),
    }
    pq.write_table(tables[kind], path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("missing_id", "missing required column 'id'"), ("missing_prompt", "missing required column 'prompt'"),
     ("wrong_type", "column 'prompt' must be string, found int64"),
     ("corrupt", "not a readable Parquet file")],
)  # fmt: skip
def test_bad_partitions(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], kind: str, message: str
) -> None:
    server = fake_openai()
    write_partition(tmp_path / "in" / "a-good.parquet", GOOD)
    write_bad(tmp_path / "in" / "b-bad.parquet", kind)
    with pytest.raises(PartitionsFailed, match="b-bad"):
        generate(
            output=str(tmp_path / "out"),
            input=str(tmp_path / "in"),
            options=Options(base_url=server.base_url, model="m"),
        )
    assert pq.read_table(tmp_path / "out" / "generated" / "a-good.parquet").num_rows == 1
    failure = pq.read_table(tmp_path / "out" / "failures" / "generate" / "b-bad.parquet").to_pylist()[0]
    assert "b-bad.parquet" in failure["message"] and message in failure["message"]


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [(None, "prompt is null"), ("", "empty or whitespace"), (" \t\n", "empty or whitespace"),
     ("nul\x00byte", "NUL bytes"), ("x" * 5000, "over the model-context limit of 3000")],
)  # fmt: skip
def test_bad_rows(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI], prompt: str | None, reason: str
) -> None:
    server = fake_openai()
    write_partition(tmp_path / "in" / "p.parquet", [*GOOD, {"id": "bad", "prompt": prompt}])
    config = tmp_path / "c.toml"
    config.write_text(f'max_prompt_chars = 3000\n[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\n')
    summary = generate(
        output=str(tmp_path / "out"), input=str(tmp_path / "in"), options=Options(config=config)
    )
    assert summary.rows_ok == 1 and summary.rows_failed == 1
    failure = pq.read_table(tmp_path / "out" / "failures" / "generate" / "p.parquet").to_pylist()[0]
    assert (failure["id"], failure["row"], failure["stage"]) == ("bad", 1, "input") and reason in failure[
        "message"
    ]


def test_duplicate_ids_within_and_across_partitions(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    write_partition(tmp_path / "in" / "a.parquet", [*GOOD, {"id": "g1", "prompt": "again"}])
    write_partition(tmp_path / "in" / "b.parquet", [{"id": "g1", "prompt": "and again"}])
    generate(
        output=str(tmp_path / "out"),
        input=str(tmp_path / "in"),
        options=Options(base_url=server.base_url, model="m"),
    )
    failures = pq.read_table(tmp_path / "out" / "failures" / "generate").to_pylist()
    assert sorted((f["partition"], f["row"]) for f in failures) == [("a", 1), ("b", 0)]
    assert all("duplicate id 'g1'" in f["message"] for f in failures)


@pytest.mark.parametrize(
    ("setup", "message"),
    [("empty_dir", "no Parquet partitions"), ("bad_policy", "02_fraud_deception.toml: not valid TOML"),
     ("bad_config", "c.toml: max_rounds: must be at least 1 and at most 50")],
)  # fmt: skip
def test_bad_setup_is_a_clear_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    (tmp_path / "in").mkdir()
    args = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    if setup != "empty_dir":
        write_partition(tmp_path / "in" / "p.parquet", GOOD)
    if setup == "bad_policy":
        policies = tmp_path / "policies"
        policies.mkdir()
        for source in DEFAULT_POLICIES.glob("*.toml"):
            (policies / source.name).write_text(source.read_text())
        (policies / "02_fraud_deception.toml").write_text("id = [unclosed")
        args += ["--policies", str(policies)]
    if setup == "bad_config":
        (tmp_path / "c.toml").write_text("max_rounds = 0\n")
        args += ["--config", str(tmp_path / "c.toml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("aidsafe: error: ") and message in err and err.count("\n") == 1  # one line
