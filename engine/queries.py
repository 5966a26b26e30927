"""Named SQL queries, kept in ``engine/sql/*.sql`` rather than scattered f-strings.

Each query in a file starts with ``-- name: some_name`` followed by comment lines that
describe it, then the SQL up to the next ``-- name:``. :data:`QUERIES` holds them all;
values always go in as ``$n`` parameters. Loading happens once; a missing name is a
KeyError at start-up, not in the middle of a campaign.
"""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split one .sql file into its named queries."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


def load_all() -> MappingProxyType[str, str]:
    """Every named query of every file in engine/sql."""
    queries: dict[str, str] = {}
    for entry in sorted(resources.files("engine").joinpath("sql").iterdir(), key=str):
        if entry.name.endswith(".sql"):
            for name, sql in parse(entry.read_text(encoding="utf-8")).items():
                if name in queries:
                    raise ValueError(f"query {name!r} is defined in two files")
                queries[name] = sql
    return MappingProxyType(queries)


QUERIES = load_all()
