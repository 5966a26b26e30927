"""Fixtures for the acceptance suite: commands run as a user types them.

``cli("campaign", "list")`` runs ``engine.cli.main`` in a project folder of its own (the
test's tmp_path, as the current directory, no ``$ENGINE_CONFIG``) on the test's migrated
database, and returns the exit code, stdout and stderr. It is a plain function: an async
test calls it through ``asyncio.to_thread`` (``main`` runs an event loop of its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main
from engine.simulator import FamilySettings, RunningSimulator, SimulatorSettings, serve
from tests.net import free_port

#: the webhook secret of the simulator account the e2e daemons run with
SECRET = "a-webhook-secret-long-enough"


@pytest.fixture
async def sim() -> AsyncIterator[tuple[RunningSimulator, int]]:
    """The simulator, calling back a daemon that will listen on the port given."""
    port = free_port()
    settings = SimulatorSettings(
        seed=5,
        default=FamilySettings(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/sim",
            webhook_secret=SECRET,
            latency=(0.005, 0.02),
            receipt_delay=(0.05, 0.3),
        ),
    )
    async with await serve(settings, "127.0.0.1", 0) as running:
        yield running, port


@pytest.fixture
def use_database(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Commands run in tmp_path on the test's migrated database (no $ENGINE_CONFIG)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return database_url


@dataclass(frozen=True)
class Result:
    """What a user sees of one command."""

    code: int
    out: str
    err: str


Cli = Callable[..., Result]
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory of the commands; no engine.yaml unless the test writes one."""
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _runner(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Result:
        capsys.readouterr()  # what came before is not this command's output
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli(
    project: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """``engine ARGS`` on this test's migrated database (``$DATABASE_URL``)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    return _runner(capsys)


@pytest.fixture
def cli_offline(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """``engine ARGS`` for commands that need no database (validate, sms analyze, ...): the
    one named cannot be reached, so none is used by mistake and no embedded server starts."""
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    return _runner(capsys)
