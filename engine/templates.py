"""Message templates: sandboxed Jinja2, compiled once per run, rendered per recipient.

A campaign file can never run code or read files:

- the environment is Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`, which
  refuses attributes starting with ``_`` (``''.__class__``), unsafe callables, ``str.format``
  tricks and changing lists or dicts;
- its loader refuses every name, and :func:`check_syntax` rejects ``include``, ``import``,
  ``from`` and ``extends`` before a campaign is accepted;
- templates see no globals (no ``range``, ``cycler``, ``lipsum``...), only the recipient's
  context from :func:`build_context`;
- :mod:`engine.template_limits` (wired in by :mod:`engine.template_sandbox`) caps what a
  render may cost (any value 100,000 characters, 100,000 steps, 100,000 characters of
  output, 0.5 s): past a limit, that recipient is a ``render_error``; a constant expression
  past one (``{{ 'a' * 10**9 }}``) is a validate error.

A rendered message holding a character PostgreSQL text cannot store (NUL, an unpaired
surrogate) is a ``render_error`` too, and such characters are replaced in error messages.

Variables are strict: a missing one raises :class:`RenderError` naming it, so one recipient
fails (status ``render_error``), never the run; ``{{ first_name | default('there') }}`` and
``{% if first_name is defined %}`` are the ways to allow a missing value. ``trim_blocks`` and
``lstrip_blocks`` are on, so ``{% if %}`` lines in a YAML block scalar add no blank lines, and
one trailing newline (which ``|`` block scalars add) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateNotFound, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError

from engine import template_limits
from engine.errors import EngineError
from engine.template_limits import DEFAULT_LIMITS, Limits, TemplateLimitError
from engine.template_sandbox import LimitedEnvironment, constant_problem

if TYPE_CHECKING:
    from jinja2 import Template

    from engine.spec import MessageSpec

_REFUSED_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
#: characters a PostgreSQL text value cannot hold
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with the characters PostgreSQL text cannot hold replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


class RenderError(EngineError):
    """One recipient's message could not be rendered; ``variable`` names a missing value."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(storable(message))
        self.variable = variable


class _NoLoader(BaseLoader):
    """Refuses every template name: a campaign can never include or import a file."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        raise TemplateNotFound(template, "templates may not include or import other templates")


def _environment() -> LimitedEnvironment:
    env = LimitedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        loader=_NoLoader(),
    )
    env.globals.clear()
    return env


def check_syntax(source: str) -> str | None:
    """``None`` if ``source`` is an acceptable template, else what is wrong and on which line."""
    env = _environment()
    try:
        tree = env.parse(source)
        constant = constant_problem(env, tree, DEFAULT_LIMITS)
        env.compile(tree)  # code generation finds unknown filters and tests
    except TemplateSyntaxError as exc:
        return f"template syntax error on template line {exc.lineno}: {_sentence(exc.message)}"
    except (TemplateError, RecursionError, ValueError, MemoryError) as exc:
        return f"template cannot be compiled: {_sentence(str(exc))}"
    for node in tree.find_all(_REFUSED_NODES):
        tag = type(node).__name__.lower().replace("fromimport", "from")
        return (
            f"template line {node.lineno}: '{{% {tag} %}}' is not allowed: "
            "a message template cannot use other templates or files"
        )
    if constant is not None:
        return f"template line {constant[0]}: {constant[1]}"
    return None


def _sentence(message: str | None) -> str:
    return (message or "invalid syntax").rstrip(".")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered message and the locale whose template was used (``None``: the body)."""

    text: str
    locale_used: str | None


@dataclass(slots=True)
class MessageTemplates:
    """The compiled body and locale templates of one campaign's message."""

    body: Template
    locales: dict[str, tuple[str, Template]]  # normalised tag -> (tag as written, template)
    limits: Limits = DEFAULT_LIMITS
    _chosen: dict[str | None, tuple[str | None, Template]] = field(default_factory=dict)

    def render(self, context: Mapping[str, Any], locale: str | None) -> Rendered:
        """Render for one recipient; raise RenderError, never anything else."""
        locale_used, template = self.choose(locale)
        values = context if isinstance(context, dict) else dict(context)
        budget = template_limits.start(self.limits)
        try:  # what Template.render does, minus merging globals (there are none) and copying
            parts = template.root_render_func(template.new_context(values, shared=True))
            text = "".join(parts)
        except UndefinedError as exc:
            raise _missing_error(exc) from exc
        except TemplateLimitError as exc:
            raise RenderError(str(exc)) from exc
        except SecurityError as exc:
            raise RenderError(f"refused by the template sandbox: {exc}") from exc
        except TemplateError as exc:
            raise RenderError(f"template error: {exc}") from exc
        except Exception as exc:  # a filter or operator failed: fail this recipient, not the run
            raise RenderError(f"template error: {type(exc).__name__}: {exc}") from exc
        finally:
            template_limits.stop(budget)
        if _UNSTORABLE.search(text):
            raise RenderError(
                "the message holds a character that cannot be stored (NUL or an unpaired surrogate)"
            )
        return Rendered(text, locale_used)

    def choose(self, locale: str | None) -> tuple[str | None, Template]:
        """The template for ``locale``: ``es-MX``, then ``es``, then the body."""
        chosen = self._chosen.get(locale)
        if chosen is None:
            chosen = self._chosen[locale] = self._lookup(locale)
        return chosen

    def _lookup(self, locale: str | None) -> tuple[str | None, Template]:
        parts = normalise_locale(locale).split("-") if locale else []
        while parts:
            found = self.locales.get("-".join(parts))
            if found is not None:
                return found
            parts.pop()
        return None, self.body


_UNDEFINED_VARIABLE = re.compile(r"'(?P<name>[^']+)' is undefined")
_UNDEFINED_MEMBER = re.compile(r"has no (?:attribute|element) '?(?P<name>.+?)'?$")


def _missing_error(exc: UndefinedError) -> RenderError:
    message = str(exc)
    if found := _UNDEFINED_VARIABLE.fullmatch(message):
        return RenderError(f"undefined variable '{found['name']}'", found["name"])
    found = _UNDEFINED_MEMBER.search(message)
    return RenderError(f"undefined value: {message}", found["name"] if found else None)


def normalise_locale(tag: str) -> str:
    """``pt_BR`` and ``PT-br`` both become ``pt-br`` (the form locales are matched in)."""
    return re.sub(r"[_\s]+", "-", tag.strip()).lower()


def compile_message(message: MessageSpec, limits: Limits = DEFAULT_LIMITS) -> MessageTemplates:
    """Compile the body and every locale once, for a whole run."""
    env = _environment()
    locales = {
        normalise_locale(tag): (tag, env.from_string(source))
        for tag, source in message.locales.items()
    }
    return MessageTemplates(env.from_string(message.body or ""), locales, limits)


def variables(source: str) -> frozenset[str]:
    """The names a template reads from its context (for caching renders by their values)."""
    env = _environment()
    return frozenset(meta.find_undeclared_variables(env.parse(source)))


def build_context(
    contact_fields: Mapping[str, Any],
    attributes: Mapping[str, Any],
    campaign_vars: Mapping[str, Any],
) -> dict[str, Any]:
    """Template values: contact fields win over attributes, which win over campaign vars.

    ``None`` values are left out, so ``default()`` applies to them.
    """
    context = dict(campaign_vars)
    context.update((k, v) for k, v in attributes.items() if v is not None)
    context.update((k, v) for k, v in contact_fields.items() if v is not None)
    return context
