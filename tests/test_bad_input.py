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
            options=Options(base_url=server.base_url, model="m", max_failed_fraction=1.0),
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
    endpoint = f'[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\n'
    config.write_text(f"max_prompt_chars = 3000\nmax_failed_fraction = 1.0\n{endpoint}")
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
        options=Options(base_url=server.base_url, model="m", max_failed_fraction=1.0),
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


def invalid_utf8(rows: list[tuple[bytes, bytes]]) -> pa.Table:
    """A table whose string columns hold bytes that are not UTF-8 (as a broken writer leaves them)."""
    raw = pa.table({"id": pa.array([r[0] for r in rows]), "prompt": pa.array([r[1] for r in rows])})
    return raw.cast(pa.schema([("id", pa.string()), ("prompt", pa.string())]), safe=False)


def test_invalid_utf8_fails_only_its_row_with_file_and_row_named(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    server = fake_openai()
    write_partition(tmp_path / "in" / "a.parquet", GOOD)
    pq.write_table(invalid_utf8([(b"ok1", b"Fine?"), (b"bad\xff", b"Fine?"), (b"ok2", b"Bad \xfe")]),
                   tmp_path / "in" / "b.parquet")  # fmt: skip
    summary = generate(output=str(tmp_path / "out"), input=str(tmp_path / "in"),
                       options=Options(base_url=server.base_url, model="m", max_rounds=1,
                                       max_failed_fraction=1.0))  # fmt: skip
    assert sorted(pq.read_table(tmp_path / "out" / "generated").column("id").to_pylist()) == ["g1", "ok1"]
    failures = {f["row"]: f for f in pq.read_table(tmp_path / "out" / "failures" / "generate").to_pylist()}
    assert failures[1]["id"] is None and "id is not valid UTF-8" in failures[1]["message"]
    assert failures[2]["id"] == "ok2" and "prompt is not valid UTF-8" in failures[2]["message"]
    assert summary.rows_ok == 2 and summary.rows_failed == 2


def test_a_glob_over_a_symlink_loop_finds_the_partitions_once(tmp_path: Path) -> None:
    from aidsafe.partitions import discover

    write_partition(tmp_path / "in" / "sub" / "p.parquet", GOOD)
    (tmp_path / "in" / "sub" / "loop").symlink_to(tmp_path / "in")
    assert discover(f"{tmp_path}/in/**/*.parquet") == [tmp_path / "in" / "sub" / "p.parquet"]


CARRIED = pa.table(
    {
        "id": ["c1"],
        "prompt": ["How do I boil an egg?"],
        "cot": ["an input column named like an output"],
        "input_cot": ["and its renamed twin"],
        "struct": pa.array([{"a": 1, "b": "x"}]),
        "list": pa.array([[1, 2]]),
        "map": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
        "dictionary": pa.array(["red"]).dictionary_encode(),
        "timestamp": pa.array([0], pa.timestamp("us", tz="Europe/Berlin")),
        "decimal": pa.array([1], pa.decimal128(10, 2)),
        "large_string": pa.array(["big"], pa.large_string()),
        "binary": pa.array([b"\x00\x01"], pa.binary()),
    }
)


def test_carried_columns_of_every_arrow_type_pass_every_stage_unchanged(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    from flows.run import run

    server = fake_openai()
    (tmp_path / "in").mkdir()
    pq.write_table(CARRIED, tmp_path / "in" / "p.parquet")
    run(
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        Options(base_url=server.base_url, model="m", max_rounds=1),
    )
    for stage_dir in ("generated", "refined", "graded", "kept"):
        table = pq.read_table(tmp_path / "out" / stage_dir / "p.parquet")
        names = table.column_names
        assert len(names) == len(set(names)) and "input2_cot" in names and "input_cot" in names, stage_dir
        for name in CARRIED.column_names:
            kept_as = "input2_cot" if name == "cot" else name
            assert table.schema.field(kept_as).type == CARRIED.schema.field(name).type, (stage_dir, name)
            assert table.column(kept_as).equals(CARRIED.column(name)), (stage_dir, name)
