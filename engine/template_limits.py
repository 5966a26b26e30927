"""Limits on what one template render may cost: value size, steps, output and time.

A campaign file is written by marketing staff and rendered by the daemon, so a template
must not be able to exhaust memory or stall the daemon. This module holds the limits and
the checks; :mod:`engine.template_sandbox` wires them into Jinja. Per message (defaults in
:class:`Limits`):

- no value may be longer than ``length`` characters (or items): ``*``, ``+``, ``~``, ``%``,
  the filters that grow text (``center``, ``indent``, ``wordwrap``, ``format``, ``join``,
  ``replace``, ``batch``, ``slice``, ``urlize``, ``tojson``) and the string methods that do
  (``center``, ``ljust``, ``format``, ``replace``, ``join``, ``translate``...) are checked
  *before* the value is built; numbers are limited to ``int_bits`` bits (``9 ** (9 ** 9)``);
  ``sum`` adds numbers only (summing lists copies them once per item);
- at most ``steps`` loop iterations, calls, filters and operators;
- at most ``output`` characters written, text captured by ``{% set %}`` blocks included;
- at most ``seconds`` of rendering.

Going past a limit raises :class:`TemplateLimitError`. What a render has spent is a
:class:`Budget` held in a context variable between :func:`start` and :func:`stop`, so the
checks need no handle on the render (and each worker thread has its own). A value's size is
its :func:`weight`: about what printing it costs, so a list holding one long string many
times counts every copy. The clock is read every 16 steps; each step is bounded work.
"""

from __future__ import annotations

import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from itertools import islice
from typing import Any

from engine.errors import EngineError

BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "**": operator.pow,
    "%": operator.mod,
}


class TemplateLimitError(EngineError):
    """A template went past one of its limits."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one message's render may cost."""

    length: int = 100_000  # characters (or items) in any one value
    output: int = 100_000  # characters written, captured text included
    steps: int = 100_000  # loop iterations, calls, filters and operators
    seconds: float = 0.5  # wall-clock time
    int_bits: int = 4096  # bits in any number built by * or **


class Budget:
    """What one render has spent so far."""

    __slots__ = ("deadline", "limits", "output", "steps")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.steps = 0
        self.output = 0

    def step(self) -> None:
        """Count one loop iteration, call, filter or operator; check the time."""
        self.steps += 1
        if self.steps & 15 and self.steps <= self.limits.steps:
            return  # the clock is read every 16 steps: each step is bounded work
        if self.steps > self.limits.steps:
            raise TemplateLimitError(
                f"more than the limit of {self.limits.steps} steps "
                "(loop iterations, calls, filters and operators)"
            )
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"longer than the time limit of {self.limits.seconds:g} s per message"
            )

    def write(self, size: int) -> None:
        """Count ``size`` characters of output."""
        self.output += size
        if self.output > self.limits.output:
            raise self.over_output()

    def over_output(self) -> TemplateLimitError:
        """The error for output past the limit."""
        return TemplateLimitError(
            f"more than the limit of {self.limits.output} characters of output"
        )


DEFAULT_LIMITS = Limits()
_BUDGET: ContextVar[Budget | None] = ContextVar("engine_template_budget", default=None)


def start(limits: Limits) -> Token[Budget | None]:
    """Open a fresh budget for one render (in this thread); pass the token to :func:`stop`."""
    return _BUDGET.set(Budget(limits))


def stop(token: Token[Budget | None]) -> None:
    """Close the budget :func:`start` opened."""
    _BUDGET.reset(token)


def current() -> Budget:
    """The budget of the render in progress (a fresh one outside a render)."""
    return _BUDGET.get() or Budget(DEFAULT_LIMITS)


# --- sizes ------------------------------------------------------------------------------


def weight(value: Any, limit: int) -> int:
    """About how many characters ``value`` prints as; stops counting once past ``limit``.

    Containers count their items, so ``[x * 99999] * 99999`` (one string, shared) weighs
    what printing it would cost, not what it holds in memory.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(islice(item, limit + 1))
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(islice(item.keys(), limit + 1))
            stack.extend(islice(item.values(), limit + 1))
        else:
            total += 1
    return total


def _too_long(limit: int) -> TemplateLimitError:
    return TemplateLimitError(f"a value would be longer than the limit of {limit} characters")


def _need(size: int) -> None:
    limit = current().limits.length
    if size > limit:
        raise _too_long(limit)


def checked(value: Any) -> Any:
    """``value``, if it is within the length limit."""
    limit = current().limits.length
    if isinstance(value, str | list | tuple | dict | set) and weight(value, limit) > limit:
        raise _too_long(limit)
    return value


def _size(value: Any) -> int:
    return weight(value, current().limits.length)


def _check_bits(bits: int) -> None:
    limit = current().limits.int_bits
    if bits > limit:
        raise TemplateLimitError(f"a number would be larger than the limit of {limit} bits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


# --- operators --------------------------------------------------------------------------


_SEQUENCES = (str, bytes, list, tuple)


def binop(op: str, left: Any, right: Any) -> Any:
    """``left op right``, refused when the result would be past a limit."""
    current().step()
    if op == "*":
        _check_mul(left, right)
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _need(_size(left) + _size(right))
    elif op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_bits(left.bit_length() * right)
    elif op == "%" and isinstance(left, str):
        _check_printf(left, right)
        return checked(BINOPS[op](left, right))
    return BINOPS[op](left, right)


def _check_mul(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        _check_bits(left.bit_length() + right.bit_length())
    elif _is_int(right) and isinstance(left, _SEQUENCES) and right > 0:
        _need(_size(left) * right)
    elif _is_int(left) and isinstance(right, _SEQUENCES) and left > 0:
        _need(_size(right) * left)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _number(digits: str | None) -> int:
    """A width or precision written in a format (huge ones count as huge, not parsed)."""
    if not digits or not digits.isdigit():
        return 0
    return int(digits) if len(digits) <= 9 else 10**9


def _ints(values: Iterable[Any]) -> int:
    return sum(abs(v) for v in values if _is_int(v))


def _check_printf(fmt: str, args: Any) -> None:
    """``fmt % args`` (and the ``format`` filter): widths, precisions and the values used."""
    values = (
        list(args.values())
        if isinstance(args, Mapping)
        else (list(args) if isinstance(args, tuple) else [args])
    )
    size, fields, star = len(fmt), 0, False
    for found in _PRINTF.finditer(fmt):
        fields += 1
        star = star or "*" in (found[1], found[2])
        size += _number(found[1]) + _number(found[2])
    if star:
        size += _ints(values)
    _need(size + fields * _size(values))


def _check_format(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``fmt.format(...)``: widths and precisions in each field, and the values used."""
    values = [*args, *kwargs.values()]
    value_size = _size(values)
    size = 0
    for literal, field, spec, _ in string.Formatter().parse(fmt):
        size += len(literal)
        if field is not None:
            size += value_size + sum(_number(d) for d in re.findall(r"\d+", spec or ""))
            if spec and "{" in spec:  # a width taken from the arguments
                size += _ints(values)
    _need(size)


# --- calls and filters ------------------------------------------------------------------


def _arg(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None
) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_width(value: Any) -> None:
    if _is_int(value):
        _need(value)


def _joined(items: Any, separator: Any) -> list[Any]:
    """The items of a join, materialised (at most the limit), once their total is known."""
    limit = current().limits.length
    listed = list(islice(items, limit + 1))
    _need(_size(listed) + len(str(separator)) * len(listed))
    return listed


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    kind = type(text)
    if not (kind in (str, bytes) and isinstance(old, kind) and isinstance(new, kind)):
        return
    found = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        found = min(found, count)
    _need(len(text) + found * len(new))


def _check_str_method(
    text: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Refuse a string method call whose result would be past the limit."""
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(_arg(args, kwargs, 0, "width"))
    elif name == "expandtabs":
        tab = _arg(args, kwargs, 0, "tabsize", 8)
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        _need(len(text) + tabs * (tab if _is_int(tab) else 0))
    elif name == "replace":
        _check_replace(
            text,
            _arg(args, kwargs, 0, "old"),
            _arg(args, kwargs, 1, "new"),
            _arg(args, kwargs, 2, "count", -1),
        )
    elif name == "join" and args:
        return (_joined(args[0], text), *args[1:]), kwargs
    elif name == "format" and isinstance(text, str):
        _check_format(text, args, kwargs)
    elif name == "format_map" and isinstance(text, str) and args and isinstance(args[0], Mapping):
        _check_format(text, (), args[0])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        widest = max((_size(v) for v in args[0].values()), default=1)
        _need(len(text) * max(widest, 1))
    return args, kwargs


def check_call(
    obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Count a call and refuse it if its result would be past a limit; maybe new args."""
    current().step()
    method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(method, "__self__", None)
    if isinstance(owner, str | bytes):
        return _check_str_method(owner, getattr(method, "__name__", ""), args, kwargs)
    return args, kwargs


FilterArgs = tuple[Any, tuple[Any, ...], dict[str, Any]]


def _center(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    _check_width(_arg(args, kwargs, 0, "width"))
    return value, args, kwargs


def _indent(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    width = _arg(args, kwargs, 0, "width", 4)
    each = width if _is_int(width) else len(str(width))
    text = str(value)
    _need(len(text) + (text.count("\n") + 1) * max(each, 0))
    return value, args, kwargs


def _wordwrap(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    width = _arg(args, kwargs, 0, "width", 79)
    wrap = _arg(args, kwargs, 2, "wrapstring") or "\n"
    text = str(value)
    lines = len(text) // max(width if _is_int(width) else 1, 1) + text.count("\n") + 1
    _need(len(text) + lines * len(str(wrap)))
    return value, args, kwargs


def _format(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    _check_printf(str(value), kwargs or args)
    return value, args, kwargs


def _join(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    return _joined(value, _arg(args, kwargs, 0, "d", "")), args, kwargs


def _replace(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    _check_replace(
        str(value),
        _arg(args, kwargs, 0, "old"),
        _arg(args, kwargs, 1, "new"),
        _arg(args, kwargs, 2, "count"),
    )
    return value, args, kwargs


def _batch(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    _check_width(_arg(args, kwargs, 0, "linecount"))
    return value, args, kwargs


def _slice(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    _check_width(_arg(args, kwargs, 0, "slices"))
    return value, args, kwargs


def _urlize(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    extra = sum(
        len(str(_arg(args, kwargs, i, name) or "")) for i, name in ((2, "target"), (3, "rel"))
    )
    text = str(value)
    _need(3 * len(text) + (text.count(" ") + 1) * (extra + 40))  # each word may be a link
    return value, args, kwargs


def _tojson(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    indent = _arg(args, kwargs, 0, "indent")
    if _is_int(indent):  # every item may sit on a line of its own, indented to its depth
        _need(_size(value) * (1 + max(indent, 0) * _depth(value)))
    return value, args, kwargs


def _depth(value: Any) -> int:
    """How deep containers nest in ``value`` (a value within the length limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | tuple | dict):
            deepest = max(deepest, depth)
            items = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in items)
    return deepest


def _sum(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FilterArgs:
    start = _arg(args, kwargs, 1, "start", 0)
    if not isinstance(start, int | float):  # summing lists copies them once per item
        raise TemplateLimitError("the sum filter adds numbers only (a limit on templates)")
    return value, args, kwargs


FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], FilterArgs]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "urlize": _urlize,
    "tojson": _tojson,
}


def check_concat(parts: tuple[Any, ...]) -> None:
    """``a ~ b ~ ...``: refused before the text is built."""
    _need(sum(_size(part) for part in parts))


def printed(value: Any) -> str:
    """``value`` as written by ``{{ ... }}``: checked before it is printed, then counted."""
    budget = current()
    if type(value) is str:  # the common case, and its length is its weight
        text = value
    elif weight(value, budget.limits.output) > budget.limits.output:
        raise budget.over_output()
    else:
        text = str(value)
    budget.write(len(text))
    return text
