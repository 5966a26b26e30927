"""Fixtures of the adapter unit tests: account, message, mocked HTTP, adapter and its calls.

A module that uses them sets ``CASE`` (a :class:`tests.unit.adapter_case.AdapterCase`); the
fixtures read it from the requesting module, so one set of fixtures serves every provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from engine.providers import adapter_for
from engine.providers.base import Outbound
from tests.aioresponses_compat import MockedHTTP
from tests.unit.adapter_case import AdapterCase, MakeAccount, MakeAdapter, MakeMessage, Sent


@pytest.fixture
def case(request: pytest.FixtureRequest) -> AdapterCase:
    """The requesting module's ``CASE``."""
    found: AdapterCase = request.module.CASE
    return found


@pytest.fixture
def http() -> Iterator[MockedHTTP]:
    """Mocked HTTP for the test: no request leaves the process."""
    with MockedHTTP() as mocked:
        yield mocked


@pytest.fixture
def account(case: AdapterCase) -> MakeAccount:
    """Build the case's account; an ``extra`` field set to None is left out."""

    def make(**extra: Any) -> Any:
        data = {**case.fields, **extra}
        return case.account_type.model_validate({k: v for k, v in data.items() if v is not None})

    return make


@pytest.fixture
def message(case: AdapterCase) -> MakeMessage:
    """Build one outbound SMS, to the case's number unless told."""

    def make(n: int = 1, to: str | None = None, body: str = "Hello") -> Outbound:
        return Outbound(message_id=n, to=case.to if to is None else to, body=body)

    return make


@pytest.fixture
def adapter(case: AdapterCase, account: MakeAccount, session: aiohttp.ClientSession) -> MakeAdapter:
    """Build the case's adapter on this test's session."""

    def make(public_url: str | None = case.public_url, **extra: Any) -> Any:
        made = adapter_for(case.name, account(**extra), session, public_url=public_url)
        assert isinstance(made, case.adapter_type)
        return made

    return make


@pytest.fixture
def sent(http: MockedHTTP) -> Sent:
    """The calls the mocked HTTP saw to one URL (as written, escapes kept)."""

    def calls(method: str, url: str) -> list[Any]:
        found: list[Any] = http.requests.get((method, URL(url, encoded=True)), [])
        return found

    return calls
