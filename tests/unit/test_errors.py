"""One exception tree: every exception class in engine/ derives from EngineError and is
drawn, under its real parent and with its real module, in engine/errors.py's docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import engine
from engine import errors
from engine.errors import EngineError

# a line of the tree: box-drawing indent, the class, the module that defines it
_TREE_LINE = re.compile(r"^    (?P<indent>[│├└─ ]*)(?P<name>\w+)\s+(?P<module>engine(?:\.\w+)*)\s")


def engine_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in an engine module, by name (each module imported)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if info.name == "engine.__main__":  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
            ):
                assert obj.__name__ not in found, f"two exceptions named {obj.__name__}"
                found[obj.__name__] = obj
    return found


def drawn_tree() -> dict[str, tuple[str, str | None]]:
    """The docstring's tree: class name -> (module, parent name or None for the root)."""
    tree: dict[str, tuple[str, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[match["name"]] = (match["module"], stack[-1][1] if stack else None)
        stack.append((depth, match["name"]))
    return tree


EXCEPTIONS = engine_exceptions()
TREE = drawn_tree()


def test_the_walk_and_the_tree_find_something() -> None:
    assert {"EngineError", "RunStopped", "BadRequest", "NotGsmError"} <= EXCEPTIONS.keys()
    assert TREE["EngineError"] == ("engine.errors", None)
    assert TREE["MigrationError"] == ("engine.errors", "DatabaseError")


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_engine_exception_derives_from_engine_error(name: str) -> None:
    assert issubclass(EXCEPTIONS[name], EngineError)


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_engine_exception_is_drawn_where_it_lives(name: str) -> None:
    cls = EXCEPTIONS[name]
    assert name in TREE, f"{cls.__module__}.{name} is missing from engine/errors.py's tree"
    module, parent = TREE[name]
    assert module == cls.__module__
    # the drawn parent is the first base; a second base (ValueError) is footnoted in the tree
    assert cls.__bases__[0].__name__ == (parent or "Exception")


def test_the_tree_names_no_class_that_does_not_exist() -> None:
    assert sorted(TREE.keys() - EXCEPTIONS.keys()) == []


@pytest.mark.parametrize("name", ["AudienceFileError", "NoRateError", "NotGsmError"])
def test_value_errors_stay_value_errors(name: str) -> None:
    # pydantic validators report only ValueError at the field's line; callers catch them so
    assert issubclass(EXCEPTIONS[name], ValueError)
