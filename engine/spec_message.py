"""The parts of the campaign model for issue 22: tracked links and A/B variants. Pure.

``links``: ``track`` (default false), ``base_url`` (the public URL of the daemon's redirect
endpoint; without it, ``webhooks.public_url`` of ``engine.yaml`` at expansion) and ``utm``
(``source``, ``medium``, ``campaign``, ``term``, ``content``: templates, see
:mod:`engine.links`).

``message.variants``: each a ``name``, a ``body`` (and per-locale bodies under ``locales``,
like ``message.body``) and a ``weight`` (any positive number; the shares are the weights
over their sum). With variants, ``message.body`` and ``message.locales`` are not given.
``message.winner``: ``test_share`` (``20%`` or ``0.2``, above 0 and below 100%), ``after``
(a duration: ``2h``, ``30m``) and ``by`` (``clicks``, the default: unique click-through;
or ``delivered``: delivery rate). ``by: clicks`` needs ``links.track: true``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from engine import templates
from engine.strict import Strict
from engine.values import Duration

Loc = tuple[str | int, ...]

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_BASE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~%/-]*)?")


def _template(value: str) -> str:
    if not value.strip():
        raise ValueError("the message is empty")
    problem = templates.check_syntax(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _locale_tag(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError(f"{value!r} is not a locale (use e.g. es, pt-BR)")
    return value


def _utm_value(value: str) -> str:
    problem = templates.check_syntax(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _base_url(value: str) -> str:
    if not _BASE_URL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a base URL: give http(s)://host[:port][/path], "
            "without a query or fragment"
        )
    return value.rstrip("/")


def _variant_name(value: str) -> str:
    if not _VARIANT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a variant name: letters, digits, '-' and '_' (at most 32)"
        )
    return value


def _share(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"expected a share like 20% or 0.2, got {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = float(value)
    else:
        raise ValueError(f"expected a share like 20% or 0.2, got {value!r}")
    if not 0 < share < 1:
        raise ValueError(f"the test share must be above 0 and below 100%, got {value!r}")
    return share


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


TemplateSource = Annotated[str, AfterValidator(_template)]
LocaleTag = Annotated[str, AfterValidator(_locale_tag)]


class LinkSpec(Strict):
    """Tracked short links."""

    track: bool = False
    base_url: Annotated[str, AfterValidator(_base_url)] | None = None
    utm: dict[
        Literal["source", "medium", "campaign", "term", "content"],
        Annotated[str, AfterValidator(_utm_value)],
    ] = Field(default_factory=dict)


class Variant(Strict):
    """One A/B variant of the message."""

    name: Annotated[str, AfterValidator(_variant_name)]
    body: TemplateSource
    locales: dict[LocaleTag, TemplateSource] = Field(default_factory=dict)
    weight: float = Field(default=1, gt=0)

    @field_validator("locales")
    @classmethod
    def _distinct(cls, value: dict[str, str]) -> dict[str, str]:
        return distinct_locales(value)


class Winner(Strict):
    """Send a test share first, then the best variant to the rest."""

    test_share: Annotated[float, BeforeValidator(_share)]
    after: Annotated[Duration, AfterValidator(_positive)]
    by: Literal["clicks", "delivered"] = "clicks"


def distinct_locales(value: dict[str, str]) -> dict[str, str]:
    """Refuse two spellings of one locale (``pt-BR`` and ``pt_br``)."""
    seen: dict[str, str] = {}
    for tag in value:
        other = seen.setdefault(templates.normalise_locale(tag), tag)
        if other != tag:
            raise ValueError(f"locales {other!r} and {tag!r} are the same locale")
    return value


def message_problems(message: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Cross-field problems of ``message`` (body or variants, winner, variant names)."""
    variants = message.get("variants")
    problems: list[tuple[Loc, str]] = []
    if variants:
        for key in ("body", "locales"):
            if message.get(key):
                problems.append(((key,), f"give {key} inside each variant, not with variants"))
        seen: set[Any] = set()
        if isinstance(variants, list):
            for index, variant in enumerate(variants):
                name = variant.get("name") if isinstance(variant, Mapping) else None
                if name is not None and name in seen:
                    problems.append((("variants", index, "name"), f"variant {name!r} twice"))
                seen.add(name)
            if len(variants) < 2:
                problems.append((("variants",), "give at least two variants"))
    elif "body" in message and message["body"] is None:  # a missing one: pydantic says so
        problems.append((("body",), "give a body (or variants)"))
    if message.get("winner") is not None and not variants:
        problems.append((("winner",), "a winner needs variants"))
    return problems
