"""`engine run` never serves a webhook that takes anyone's receipts and opt-outs."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_cli_foundation import engine


def test_run_with_no_config_refuses_the_secret_less_simulator(
    tmp_path: Path, database_url: str
) -> None:
    """The default account (no engine.yaml) is a simulator without a secret: `engine run`
    stops with one line saying what to do, before it listens."""
    result = engine("run", cwd=tmp_path, env={"DATABASE_URL": database_url})
    assert result.returncode == 1
    assert result.stderr.startswith(
        "engine: providers.simulator.webhook_secret: a simulator account needs one"
    )
    assert "engine demo" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_run_with_a_secret_less_simulator_in_the_file_is_a_config_error(
    tmp_path: Path, database_url: str
) -> None:
    (tmp_path / "engine.yaml").write_text("providers:\n  sim:\n    type: simulator\n    rate: 10\n")
    result = engine("run", cwd=tmp_path, env={"DATABASE_URL": database_url})
    assert result.returncode == 1
    assert result.stderr.startswith("engine: engine.yaml:3:5: providers.sim.webhook_secret:")
    assert len(result.stderr.splitlines()) == 1
