"""YAML documents that remember where each value came from.

Config and campaign files are read with :func:`load`, which keeps the line and
column of every key and value, so that a pydantic error on ``schedule.timezone``
can be reported as ``campaigns/spring.yaml:9:13: schedule.timezone: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]
#: Replaces the text of a scalar; called with (text, loc, position), returns the new text.
ScalarHook = Callable[[str, Loc, "Position"], str]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(slots=True)
class Document:
    """Parsed YAML data plus the position of each value (and of each mapping key)."""

    path: Path
    data: Any
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)

    def where(self, loc: Sequence[str | int], *, key: bool = False) -> str:
        """``path:line:col`` of the deepest known part of ``loc`` (the key itself if ``key``)."""
        loc = tuple(loc)
        pos = self.keys[loc] if key and loc in self.keys else self._deepest(loc)
        return f"{self.path}:{pos.line}:{pos.column}"

    def _deepest(self, loc: Loc) -> Position:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return Position(1, 1)

    def problem(self, loc: Sequence[str | int], message: str, *, key: bool = False) -> str:
        """One error line: ``path:line:col: dotted.field: message``."""
        dotted = ".".join(str(part) for part in loc) or "(file)"
        return f"{self.where(loc, key=key)}: {dotted}: {message}"

    def validation_problems(self, exc: ValidationError) -> list[str]:
        """Turn every pydantic error into a positioned problem line."""
        return [self._one_problem(err) for err in exc.errors(include_url=False)]

    def _one_problem(self, err: Mapping[str, Any]) -> str:
        loc = self.data_loc(err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            return self.problem(loc, "unknown field", key=True)
        if err["type"] == "missing":
            return self.problem(loc, "required field is missing")
        return self.problem(loc, message)

    def data_loc(self, loc: Iterable[str | int]) -> Loc:
        """Drop the parts of a pydantic ``loc`` that are not in the data (union tags)."""
        kept: list[str | int] = []
        node: Any = self.data
        for part in loc:
            if _has(node, part):
                node = node[part]
            elif isinstance(node, Mapping) and not _is_tag(part, node):
                node = None  # a missing or unknown key: keep it, it names the problem
            else:
                continue  # a union member or validator name pydantic adds to the loc
            kept.append(part)
        return tuple(kept)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_tag(part: str | int, node: Mapping[str, Any]) -> bool:
    return isinstance(part, str) and (node.get("type") == part or "[" in part)


class _Loader(yaml.SafeLoader):
    """A safe loader (no Python objects) whose constructed values we pair with positions."""


def load(path: Path, text: str | None = None, *, scalar_hook: ScalarHook | None = None) -> Document:
    """Parse one YAML file, keeping positions; raise ``yaml.YAMLError`` on bad syntax."""
    source = path.read_text(encoding="utf-8") if text is None else text
    loader = _Loader(source)
    try:
        node = loader.get_single_node()
        doc = Document(path=path, data=None)
        if node is not None:
            _walk(node, (), doc, scalar_hook)
            doc.data = loader.construct_document(node)
        return doc
    finally:
        loader.dispose()


def _walk(node: yaml.Node, loc: Loc, doc: Document, hook: ScalarHook | None) -> None:
    pos = doc.values[loc] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*loc, key)
            doc.keys[child] = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, doc, hook)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), doc, hook)
    elif isinstance(node, yaml.ScalarNode) and hook is not None:
        new = hook(node.value, loc, pos)
        if new != node.value:
            node.value = new
            if node.style is None:  # re-resolve plain scalars: "${PORT}" may become 8080
                node.tag = _resolve_plain(new)


def _resolve_plain(text: str) -> str:
    resolver = yaml.resolver.Resolver()
    return str(resolver.resolve(yaml.ScalarNode, text, (True, False)))  # type: ignore[no-untyped-call]


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${VAR}`` and ``${VAR:-default}``; return the text and the missing names."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return match.group(0)

    return _ENV_VAR.sub(replace, text), missing


def yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``path:line:col: invalid YAML: problem`` for a syntax error."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"
