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
    argv = ["run", "--input", str(tmp_path / "in"), "--output", str(out), "--max-rounds", "1"]
    assert main([*argv, "--max-failed-fraction", "1"]) == 0  # one row is bad input on purpose
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


def _config(root: Path, line: str) -> list[str]:
    (root / "c.toml").write_text(f'[endpoint]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n{line}\n')
    return ["--config", str(root / "c.toml")]


MISCONFIGURED: dict[str, Callable[[Path], list[str]]] = {
    "api_key in the config": lambda root: _config(root, f'api_key = "{SECRET}"'),
    "key as api_key_env": lambda root: _config(root, f'api_key_env = "{SECRET}"'),
    "key in the base URL": lambda root: ["--base-url", f"https://u:{SECRET}@127.0.0.1:9/v1", "--model", "m"],
}


@pytest.mark.usefixtures("prefect_api", "clean_env")
@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_a_misconfigured_key_is_never_echoed_written_or_sent_to_prefect(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    write_partition(tmp_path / "in" / "p.parquet", [{"id": "r1", "prompt": "Hello?"}])
    out = tmp_path / "out"
    argv = ["run", "--input", str(tmp_path / "in"), "--output", str(out), *MISCONFIGURED[case](tmp_path)]
    with get_client(sync_client=True) as client:
        runs_before = len(client.read_flow_runs())
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("aidsafe: error: ") and SECRET not in captured.out + captured.err
    assert SECRET not in caplog.text
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
    assert len(runs) == runs_before  # refused before any flow run: nothing reached Prefect's database
    assert all(SECRET not in repr(run.parameters) + repr(run.state) for run in runs)
    assert all(SECRET not in log.message for log in logs)
