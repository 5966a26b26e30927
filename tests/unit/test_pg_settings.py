"""The embedded PostgreSQL's settings: sized from the machine's memory, overridable."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import pg_settings
from engine.config import EngineConfig, load_config
from engine.errors import ConfigError

GB = pg_settings.GB
MB = pg_settings.MB


def test_a_large_machine_gets_the_sizes_the_million_message_run_needed() -> None:
    got = pg_settings.sized_for(24 * GB)
    assert got["shared_buffers"] == "4096MB"
    assert got["max_wal_size"] == "8192MB"
    assert got["effective_cache_size"] == "12288MB"
    assert got["min_wal_size"] == "1024MB"


def test_a_small_machine_keeps_the_floors() -> None:
    got = pg_settings.sized_for(512 * MB)
    assert got["shared_buffers"] == "128MB"
    assert got["max_wal_size"] == "1024MB"
    assert got["work_mem"] == "4MB"
    assert got["maintenance_work_mem"] == "64MB"


def test_settings_scale_between_the_floor_and_the_cap() -> None:
    got = pg_settings.sized_for(8 * GB)
    assert got["shared_buffers"] == "2048MB"
    assert got["work_mem"] == "16MB"


def test_durability_is_never_traded() -> None:
    assert not {"fsync", "synchronous_commit", "full_page_writes"} & set(
        pg_settings.sized_for(64 * GB)
    )


def test_values_are_quoted_so_no_value_can_add_a_setting() -> None:
    text = pg_settings.render({"application_name": "a' \\' fsync = 'off"})
    assert text.splitlines()[1] == "application_name = 'a'' \\\\'' fsync = ''off'"


@pytest.mark.parametrize("name", ["", "Shared_Buffers", "a b", "x;y", "fsync=off\nx", "a.b.c"])
def test_a_name_postgresql_could_not_have_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL setting name"):
        pg_settings.render({name: "1"})


def test_a_value_on_two_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot span lines"):
        pg_settings.render({"work_mem": "4MB\nfsync = off"})


def test_engine_yaml_takes_scalars_and_names_a_bad_key(tmp_path: Path) -> None:
    config = EngineConfig.model_validate(
        {"postgres_settings": {"work_mem": "8MB", "max_connections": 200, "jit": False}}
    )
    assert config.postgres_settings == {
        "work_mem": "8MB",
        "max_connections": "200",
        "jit": "false",
    }
    path = tmp_path / "engine.yaml"
    path.write_text("postgres_settings:\n  'bad name': 1\n")
    with pytest.raises(ConfigError, match="not a PostgreSQL setting name"):
        load_config(path)


def test_write_includes_the_file_once_and_rewrites_only_on_change(tmp_path: Path) -> None:
    (tmp_path / "postgresql.conf").write_text("# initdb's\n")
    pg_settings.write(tmp_path, {"work_mem": "9MB"}, memory=4 * GB)
    pg_settings.write(tmp_path, {"work_mem": "9MB"}, memory=4 * GB)
    main = (tmp_path / "postgresql.conf").read_text()
    assert main.count(pg_settings.INCLUDE) == 1
    conf = (tmp_path / pg_settings.CONF).read_text()
    assert "work_mem = '9MB'" in conf and "shared_buffers = '1024MB'" in conf
