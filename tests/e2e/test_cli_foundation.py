"""The `engine` command as a user runs it: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest


def engine(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENGINE_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_the_command_groups(tmp_path: Path) -> None:
    result = engine("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("db", "contacts", "campaign", "sms", "run", "report", "demo", "simulator"):
        assert f"    {group} " in result.stdout or f"    {group}\n" in result.stdout, group


def test_bad_config_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "engine.yaml").write_text("providers:\n  sim:\n    type: simulator\n    tokn: x\n")
    result = engine("db", "status", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "engine: engine.yaml:4:5: providers.sim.tokn: unknown field\n"


def test_missing_variable_in_config(tmp_path: Path) -> None:
    (tmp_path / "engine.yaml").write_text("database_url: ${NOPE_DB}\n")
    result = engine("db", "status", cwd=tmp_path)
    assert result.returncode == 1
    expected = "engine.yaml:1:15: database_url: environment variable NOPE_DB is not set"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_with_database_url(tmp_path: Path, empty_database_url: str) -> None:
    env = {"DATABASE_URL": empty_database_url}
    first = engine("db", "migrate", cwd=tmp_path, env=env)
    second = engine("db", "migrate", cwd=tmp_path, env=env)
    status = engine("db", "status", cwd=tmp_path, env=env)
    assert first.returncode == 0 and first.stdout.startswith("applied 0001_schema")
    assert second.stdout == "database is up to date\n"
    assert "0001_schema" in status.stdout and "pending" not in status.stdout
    assert engine("db", "url", cwd=tmp_path, env=env).stdout.strip() == empty_database_url


@pytest.mark.embedded_only
async def test_embedded_database_with_no_configuration(tmp_path: Path) -> None:
    migrated = engine("db", "migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / ".engine" / "pgdata" / "PG_VERSION").exists()
    again = engine("db", "migrate", cwd=tmp_path)
    assert again.stdout == "database is up to date\n"
    url = engine("db", "url", cwd=tmp_path).stdout.strip()
    try:
        conn = await asyncpg.connect(url)
        tables = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        await conn.close()
        assert tables >= 1
    finally:
        stopped = engine("db", "stop", cwd=tmp_path)
    assert stopped.stdout == "embedded PostgreSQL stopped\n"


@pytest.mark.embedded_only
async def test_embedded_server_is_sized_for_the_machine_and_takes_overrides(
    tmp_path: Path,
) -> None:
    from engine import pg_settings

    (tmp_path / "engine.yaml").write_text("postgres_settings:\n  work_mem: 7MB\n")
    url = engine("db", "url", cwd=tmp_path)
    assert url.returncode == 0, url.stderr
    sized = pg_settings.sized_for(pg_settings.machine_memory())
    try:
        conn = await asyncpg.connect(url.stdout.strip())
        shown = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("shared_buffers", "max_wal_size", "work_mem", "synchronous_commit")
        }
        await conn.close()
    finally:
        engine("db", "stop", cwd=tmp_path)
    assert shown["work_mem"] == "7MB"
    assert shown["synchronous_commit"] == "on"
    for name in ("shared_buffers", "max_wal_size"):  # PostgreSQL shows whole GB as "4GB"
        megabytes = int(sized[name].removesuffix("MB"))
        assert shown[name] in (sized[name], f"{megabytes // 1024}GB"), name
