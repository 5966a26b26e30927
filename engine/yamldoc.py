"""YAML documents that remember where each value came from.

Config and campaign files are read with :func:`load`, which keeps the line and
column of every key and value, so that a pydantic error on ``schedule.timezone``
can be reported as ``campaigns/spring.yaml:9:13: schedule.timezone: ...``.

Every file is read by a safe loader (no Python objects) with two limits a hostile or careless
file cannot get past, each reported as one ``path:line:col: invalid YAML: ...`` line:

- aliases may add at most :data:`MAX_ALIAS_NODES` values to a document in total, counting
  repeats: a "billion laughs" file (aliases of aliases of aliases) is refused at the alias that
  crosses the budget, and an alias inside the value it names (``&a [*a]``) is refused outright;
- values may nest at most :data:`MAX_DEPTH` levels deep.

A value PyYAML cannot construct (``2026-13-45`` looks like a date) is a positioned error too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

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


#: values aliases may add to one document, counting every repeat; anchors in a config or a
#: campaign (``<<: *defaults``) add a few dozen
MAX_ALIAS_NODES = 10_000
#: how deep values may nest (a config or a campaign nests five levels or so)
MAX_DEPTH = 100


class _Loader(yaml.SafeLoader):
    """A safe loader (no Python objects) whose constructed values we pair with positions.

    It counts, for each composed node, how many values it expands to (aliases included), so
    that aliases can be refused past a budget before anything walks the expanded tree.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to, once composed
        self._aliased = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node, refusing aliases past the budget and nesting past the limit."""
        if self.check_event(yaml.AliasEvent):
            self._count_alias(self.peek_event())  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(
                None,
                None,
                f"values are nested more than {MAX_DEPTH} levels deep",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 0) for c in _children(node))
        return node

    def _count_alias(self, event: Any) -> None:
        anchor = getattr(event, "anchor", None)
        node = self.anchors.get(anchor) if anchor is not None else None
        if node is None:
            return  # an undefined alias: PyYAML reports it
        size = self._sizes.get(id(node))
        if size is None:  # the anchored node is still being composed: it contains its alias
            raise ComposerError(None, None, f"alias *{anchor} refers to itself", event.start_mark)
        self._aliased += size
        if self._aliased > MAX_ALIAS_NODES:
            raise ComposerError(
                None,
                None,
                f"alias *{anchor} expands the document past {MAX_ALIAS_NODES} aliased values "
                "(a YAML bomb?): write the values out instead",
                event.start_mark,
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Construct one value; a value PyYAML cannot build is an error at its position."""
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            # PyYAML's own failures on odd values (``!!timestamp ''``, ``!!int x``)
            raise ConstructorError(None, None, f"invalid value: {exc}", node.start_mark) from exc


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL)
        first = str(exc).splitlines()[0]
        return f"{path}: invalid YAML: {first} (character {exc.position + 1} of the file)"
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = str(getattr(exc, "problem", None) or exc)
    return f"{where}: invalid YAML: {' '.join(problem.split())}"  # always one line
