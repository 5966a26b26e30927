"""aioresponses with a response class aiohttp 3.14 can build.

aioresponses 0.7.9 builds ``ClientResponse`` objects without aiohttp 3.14's
``stream_writer`` argument; :class:`MockedHTTP` supplies one on every mocked response.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from aioresponses import aioresponses
from yarl import URL


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class MockedHTTP(aioresponses):
    """``aioresponses`` whose mocked responses use :class:`CompatResponse`."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        super().add(*args, **kwargs)
