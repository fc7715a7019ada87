"""API keys: taken from the environment, sent to the server, and never written anywhere a run writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from aidsafe.cli import main
from tests.conftest import write_partition
from tests.openai_server import FakeOpenAI

SECRET = "sk-aidsafe-test-SECRET-5f1c9e"


@pytest.mark.usefixtures("prefect_api")
def test_the_key_is_used_but_never_written(
    tmp_path: Path,
    fake_openai: Callable[..., FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = fake_openai()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("AIDSAFE_MODEL", "m")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    write_partition(
        tmp_path / "in" / "p.parquet", [{"id": "r1", "prompt": "Hello?"}, {"id": "r2", "prompt": " "}]
    )
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--max-rounds", "1"]) == 0
    assert main(["export", "sft", "--output", str(out), "--split", "1,0,0"]) == 0
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 10 and (out / "export" / "sft" / "README.md") in written
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert runs and all(SECRET not in repr(run.parameters) for run in runs)


def test_there_is_no_option_for_a_key_and_a_pasted_key_is_not_echoed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--input", "x", "--output", "y", "--api-key", SECRET]) == 2
    err = capsys.readouterr().err
    assert err == "aidsafe: error: unrecognized option(s): --api-key\n"


@pytest.mark.usefixtures("prefect_api", "clean_env")
def test_the_key_can_come_from_a_prefect_secret_block(
    tmp_path: Path, fake_openai: Callable[..., FakeOpenAI]
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=SECRET).save("aidsafe-test-key", overwrite=True)
    server = fake_openai()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[endpoint]\nbase_url = "{server.base_url}"\nmodel = "m"\napi_key_block = "aidsafe-test-key"\n'
    )
    write_partition(tmp_path / "in" / "p.parquet", [{"id": "r1", "prompt": "Hello?"}])
    out = tmp_path / "out"
    assert (
        main(["generate", "--input", str(tmp_path / "in"), "--output", str(out), "--config", str(config)])
        == 0
    )
    assert server.requests and all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert not any(SECRET.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())
    config.write_text(config.read_text().replace("aidsafe-test-key", "no-such-block"))
    assert (
        main(["generate", "--input", str(tmp_path / "in"), "--output", str(out), "--config", str(config)])
        == 2
    )
