"""The Jinja sandbox templates are compiled in, with :mod:`engine.template_limits` applied.

:class:`LimitedEnvironment` is Jinja's immutable sandbox (lists and dicts cannot change, so
``l.append(l)`` cannot double a list per iteration) wired to the limits:

- every arithmetic operator goes through :meth:`~LimitedEnvironment.call_binop`, every call
  through :meth:`~LimitedEnvironment.call`, every filter through a guard, every ``~`` through
  :meth:`~LimitedEnvironment.guarded_concat`: each is counted and checked before it builds
  a value;
- every loop iterates through a hidden filter counting iterations, and every ``{{ ... }}``
  and piece of literal text written is counted as output (the code generator adds both).

Jinja evaluates constant expressions while compiling (``{{ 'a' * 10**9 }}`` took 27 s and
4 GB at validate time). Intercepted operators and filters that take the context are never
folded, so compiling costs nothing; :func:`constant_problem` instead evaluates the constant
parts of a template itself, under the limits, so a constant past one is a validate error
rather than a failure for every recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import EngineError
from engine.template_limits import (
    BINOPS,
    FILTER_CHECKS,
    Limits,
    TemplateLimitError,
    binop,
    check_call,
    check_concat,
    checked,
    current,
    printed,
    start,
    stop,
)

#: the (hidden) filter wrapped around every loop's iterable to count iterations
LOOP_FILTER = "engine: loop"


def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its limits checked; it takes the context, so Jinja never folds it."""
    check = FILTER_CHECKS.get(name)
    passed = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        current().step()
        if check is not None:
            value, args, kwargs = check(value, args, kwargs)
        if passed == "context":
            return checked(func(context, value, *args, **kwargs))
        if passed == "eval_context":
            return checked(func(context.eval_ctx, value, *args, **kwargs))
        if passed == "environment":
            return checked(func(context.environment, value, *args, **kwargs))
        return checked(func(value, *args, **kwargs))

    return guarded


@pass_context
def _loop(context: Context, iterable: Any) -> Iterator[Any]:
    """Every loop iterates through here, one step per iteration."""
    budget = current()
    step = budget.step
    for item in iterable:
        step()
        yield item


@pass_context
def _finalize(context: Context, value: Any) -> str:
    """Every ``{{ ... }}`` is written through here: checked, counted, then printed."""
    return printed(value)


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, counting loops, text written and ``~`` concatenations."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == LOOP_FILTER):
                loop.iter = nodes.Filter(
                    loop.iter, LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno
                )
        super().visit_Template(node, frame)

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        size = sum(len(n.data) for n in node.nodes if isinstance(n, nodes.TemplateData))
        if size:
            self.writeline(f"environment.write_text({size})")
        super().visit_Output(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_concat((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every limit of :mod:`engine.template_limits` applied."""

    intercepted_binops = frozenset(BINOPS)
    code_generator_class = _LimitedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.filters = {name: guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Every arithmetic operator, checked."""
        return binop(operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call, counted and checked."""
        args, kwargs = check_call(__obj, args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs))

    def guarded_concat(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b``, checked before the text is built."""
        check_concat(parts)
        return "".join(map(str, parts))

    def write_text(self, size: int) -> None:
        """Count literal template text written."""
        current().write(size)


# --- constants, at validate time --------------------------------------------------------


class _NotConstant(EngineError):
    """The expression needs the recipient's values."""


def constant_problem(
    env: LimitedEnvironment, tree: nodes.Template, limits: Limits
) -> tuple[int, str] | None:
    """(line, problem) of the first constant expression past a limit, if any."""
    token = start(limits)
    try:
        context = env.from_string("").new_context({})
        return _scan(env, context, tree)
    finally:
        stop(token)


def _scan(env: LimitedEnvironment, context: Context, node: nodes.Node) -> tuple[int, str] | None:
    if isinstance(node, nodes.Expr) and next(node.find_all(nodes.Name), None) is None:
        try:
            checked(_constant(env, context, node))
            return None
        except TemplateLimitError as exc:
            return node.lineno, str(exc)
        except _NotConstant:
            pass
        except Exception:  # an error rendering reports, not a limit
            return None
    for child in node.iter_child_nodes():
        if found := _scan(env, context, child):
            return found
    return None


def _constant(env: LimitedEnvironment, context: Context, node: nodes.Node) -> Any:
    """Evaluate a constant expression the way the compiled template would."""

    def value(n: nodes.Node) -> Any:
        return _constant(env, context, n)

    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [value(n) for n in node.items]
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Dict):
        return {value(pair.key): value(pair.value) for pair in node.items}
    if isinstance(node, nodes.BinExpr) and node.operator in BINOPS:
        return env.call_binop(context, node.operator, value(node.left), value(node.right))
    if isinstance(node, nodes.Concat):
        return env.guarded_concat(tuple(value(n) for n in node.nodes))
    if isinstance(node, nodes.Getattr):
        return env.getattr(value(node.node), node.attr)
    if isinstance(node, nodes.Filter | nodes.Call) and not (node.dyn_args or node.dyn_kwargs):
        args = [value(n) for n in node.args]
        kwargs = {str(k.key): value(k.value) for k in node.kwargs}
        if isinstance(node, nodes.Call):
            return env.call(context, value(node.node), *args, **kwargs)
        func = env.filters.get(node.name)
        if func is None or node.node is None:
            raise _NotConstant
        return func(context, value(node.node), *args, **kwargs)
    raise _NotConstant
