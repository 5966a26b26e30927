"""The layer rules, read from the source (AST, so comments and docstrings do not count).

- Nothing outside engine/providers/ and engine/simulator/ names a provider type.
- Adapters (engine/providers/) import nothing from engine.simulator, nor the database.
- SQL lives in engine/sql/*.sql (named queries) and engine/migrations/, not in Python.

docs/architecture.md states these rules; the pure modules' imports are checked by
tests/unit/test_import_graph.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
#: the provider types that are real providers ("simulator" is also the engine's own tool,
#: named by its command and the demo, so it is not in this list)
PROVIDER_TYPES = ("zoomconnect", "zenvia", "zingle", "sunshine", "courier")
_TYPE_WORD = re.compile(rf"\b({'|'.join(PROVIDER_TYPES)})\b", re.IGNORECASE)
#: a statement: an upper-case SQL verb first, then more than a number (asyncpg's command
#: tags such as "UPDATE 0" are status strings compared against, not SQL)
_SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|COPY"
    r"|LOCK|GRANT|VACUUM|ANALYZE|NOTIFY|LISTEN|DO)\s+(?!\d+\s*$)"
)
#: Python files allowed SQL text, and why
SQL_ALLOWED: set[str] = set()


def sources(under: Path = ENGINE) -> list[Path]:
    """Every Python file under ``under``."""
    return sorted(under.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ENGINE).as_posix()


def string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string constant in ``path`` that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (anywhere in it, also under TYPE_CHECKING)."""
    folders = path.relative_to(ENGINE).parent.parts if path.is_relative_to(ENGINE) else ()
    package = ".".join(("engine", *folders))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _outside_providers(path: Path) -> bool:
    return _name(path).split("/")[0] not in ("providers", "simulator")


@pytest.mark.parametrize("path", [p for p in sources() if _outside_providers(p)], ids=_name)
def test_no_provider_type_named_outside_providers(path: Path) -> None:
    named = [(line, text) for line, text in string_constants(path) if _TYPE_WORD.search(text)]
    assert named == []


@pytest.mark.parametrize("path", sources(ENGINE / "providers"), ids=_name)
def test_adapters_import_neither_the_simulator_nor_the_database(path: Path) -> None:
    forbidden = ("engine.simulator", "asyncpg", "engine.db", "engine.queries")
    bad = sorted(
        name
        for name in imported(path)
        if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    )
    assert bad == []


@pytest.mark.parametrize("path", [p for p in sources() if _name(p) not in SQL_ALLOWED], ids=_name)
def test_no_sql_outside_engine_sql(path: Path) -> None:
    statements = [(line, text[:60]) for line, text in string_constants(path) if _SQL.match(text)]
    assert statements == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        '"""zenvia in a docstring is fine."""\n'
        "from engine.simulator import core\n"
        "from .model import x\n"
        'KIND = "zenvia"\n'
        'Q = "SELECT id FROM runs"\n'
        'TAG = "UPDATE 0"\n',
        encoding="utf-8",
    )
    texts = [text for _, text in string_constants(probe)]
    assert texts == ["zenvia", "SELECT id FROM runs", "UPDATE 0"]
    assert [bool(_TYPE_WORD.search(t)) for t in texts] == [True, False, False]
    assert [bool(_SQL.match(t)) for t in texts] == [False, True, False]
    assert {"engine.simulator", "engine.model"} <= imported(probe)
