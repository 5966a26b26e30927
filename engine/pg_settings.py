"""The embedded PostgreSQL's settings, sized for the machine it runs on.

PostgreSQL's defaults (``shared_buffers = 128MB``, ``max_wal_size = 1GB``) are sized for a
laptop that does something else. ``bench/RESULTS.md`` measured what a million-message run
needs: the ``messages`` table and its indexes in PostgreSQL's own cache, and checkpoints
that are not forced every few seconds by the WAL a run writes. So the embedded server gets,
from the machine's memory (``M``):

=============================  ===================================  ===============
setting                        rule                                 at M = 24 GiB
=============================  ===================================  ===============
``shared_buffers``             M / 4, from 128 MB to 4 GB           4 GB
``effective_cache_size``       M / 2                                12 GB
``maintenance_work_mem``       M / 32, from 64 MB to 1 GB           768 MB
``work_mem``                   M / 512, from 4 MB to 64 MB          48 MB
``max_wal_size``               M / 3, from 1 GB to 8 GB             8 GB
``min_wal_size``               max_wal_size / 8                     1 GB
``checkpoint_timeout``         15 min                               15 min
``checkpoint_completion_target`` 0.9                                0.9
``wal_compression``            on                                   on
``autovacuum_vacuum_cost_limit`` 2000 (ten times the default: the hot tables churn)
=============================  ===================================  ===============

Durability is not traded for speed: ``synchronous_commit`` and ``fsync`` keep their
defaults (a receipt is answered 2xx only once it is on disk). ``max_wal_size`` is a soft
limit on the disk the WAL takes between checkpoints; a machine short of disk lowers it.

``postgres_settings:`` in engine.yaml overrides any of these or adds others (any setting
PostgreSQL accepts in ``postgresql.conf``). They are written to ``<pgdata>/engine.conf``,
which ``postgresql.conf`` includes; a server that is already running (started by another
``engine`` process) takes them at its next start, like any ``postgresql.conf`` change. A
system server is configured by its own administrator: docs/ops.md lists the same values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

MB = 1024 * 1024
GB = 1024 * MB

#: the file in pgdata holding our settings, and the line that includes it
CONF = "engine.conf"
INCLUDE = f"include_if_exists = '{CONF}'"

#: a setting's name, as PostgreSQL spells them (an extension's have a dot)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def machine_memory() -> int:
    """The machine's physical memory in bytes (4 GiB where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 4 * GB


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _size(value: int) -> str:
    """Bytes as PostgreSQL's unit syntax, in whole megabytes."""
    return f"{value // MB}MB"


def sized_for(memory: int) -> dict[str, str]:
    """The settings for a machine with ``memory`` bytes (the table above)."""
    max_wal = _clamp(memory // 3, 1 * GB, 8 * GB)
    return {
        "shared_buffers": _size(_clamp(memory // 4, 128 * MB, 4 * GB)),
        "effective_cache_size": _size(max(memory // 2, 256 * MB)),
        "maintenance_work_mem": _size(_clamp(memory // 32, 64 * MB, 1 * GB)),
        "work_mem": _size(_clamp(memory // 512, 4 * MB, 64 * MB)),
        "max_wal_size": _size(max_wal),
        "min_wal_size": _size(max(max_wal // 8, 80 * MB)),
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "wal_compression": "on",
        "autovacuum_vacuum_cost_limit": "2000",
    }


def _quoted(value: str) -> str:
    """A value as a ``postgresql.conf`` string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render(settings: Mapping[str, str]) -> str:
    """``engine.conf``'s text; raise ``ValueError`` for a name PostgreSQL could not have."""
    lines = ["# written by the campaign engine at each start: edit postgres_settings instead"]
    for name, value in settings.items():
        if not _NAME.match(name):
            raise ValueError(f"not a PostgreSQL setting name: {name!r}")
        if any(c in value for c in "\n\r\x00"):
            raise ValueError(f"postgres_settings.{name}: a value cannot span lines")
        lines.append(f"{name} = {_quoted(value)}")
    return "\n".join(lines) + "\n"


def write(pgdata: Path, overrides: Mapping[str, str], memory: int | None = None) -> None:
    """Write ``engine.conf`` into an initialised ``pgdata`` and include it, once."""
    settings = sized_for(machine_memory() if memory is None else memory)
    settings.update(overrides)
    text = render(settings)
    conf = pgdata / CONF
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
    main = pgdata / "postgresql.conf"
    if INCLUDE not in main.read_text():
        with main.open("a") as out:
            out.write(f"\n{INCLUDE}\n")
