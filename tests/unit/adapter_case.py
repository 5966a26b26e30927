"""What one adapter test module tells tests/unit/conftest.py: its account, its name, its number.

The five adapter modules (zoomconnect, zenvia, zingle, sunshine, courier) differ in these values
only; each sets ``CASE = AdapterCase(...)`` and the fixtures ``account``, ``message``,
``adapter`` and ``sent`` build from it. ``refused`` and ``transport_failures`` are here, not
fixtures, because the tests use them inside ``parametrize`` lists, before any fixture exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp
import pytest

from engine.providers.base import AccountBase, Outbound, Outcome


@dataclass(frozen=True)
class AdapterCase:
    """One provider's test values: the account's fields, its name and a number to send to."""

    name: str
    account_type: type[AccountBase]
    adapter_type: type[Any]
    fields: dict[str, Any] = field(default_factory=dict)
    to: str = "+14155550100"
    public_url: str | None = None


class MakeAccount(Protocol):
    """``account(**extra)``: the case's account with ``extra`` fields over it (None drops one)."""

    def __call__(self, **extra: Any) -> Any: ...


class MakeMessage(Protocol):
    """``message(n, to, body)``: one outbound SMS, to the case's number unless told."""

    def __call__(self, n: int = 1, to: str | None = None, body: str = "Hello") -> Outbound: ...


class MakeAdapter(Protocol):
    """``adapter(**extra)``: the case's adapter on the test's session, for ``account(**extra)``."""

    def __call__(self, public_url: str | None = ..., **extra: Any) -> Any: ...


class Sent(Protocol):
    """``sent(method, url)``: the calls the mocked HTTP saw to ``url`` (none: ``[]``)."""

    def __call__(self, method: str, url: str) -> list[Any]: ...


def refused(host: str) -> aiohttp.ClientConnectorError:
    """The error aiohttp raises when ``host`` refuses the connection."""
    key = SimpleNamespace(host=host, port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


def transport_failures(host: str) -> list[Any]:
    """The transport errors every adapter maps alike, each with the outcome its send gets."""
    return [
        pytest.param(TimeoutError(), Outcome.UNKNOWN, id="timeout"),
        pytest.param(aiohttp.ServerDisconnectedError(), Outcome.UNKNOWN, id="dropped"),
        pytest.param(
            aiohttp.ConnectionTimeoutError("connect timeout"), Outcome.RETRY, id="connect-timeout"
        ),
        pytest.param(refused(host), Outcome.RETRY, id="refused"),
    ]
