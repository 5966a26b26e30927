"""The values the simulator's machinery and its provider families pass to each other.

:class:`Stats` counts what the simulator received and did (``GET /sim/stats``); a family
parses a send request into :class:`SendItem` values (or raises :class:`BadRequest`), the
machinery answers each with a :class:`SimMessage` or a :class:`Rejection`, and queues
:class:`SimEvent` receipts that the family renders into a :class:`Post`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from engine.errors import EngineError


@dataclass(slots=True)
class Stats:
    """What the simulator received and did; ``per_number`` counts accepted messages."""

    requests: int = 0
    messages: int = 0
    accepted: int = 0
    rejected: int = 0
    unauthorized: int = 0
    bad_requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    duplicates: int = 0  # repeats of an accepted message's key (``dedupes_references``)
    receipts_posted: int = 0
    receipts_dropped: int = 0
    clicks: int = 0  # links of delivered messages followed (engine.simulator.clicker)
    per_number: Counter[str] = field(default_factory=Counter)

    def as_dict(self, numbers: bool = True) -> dict[str, Any]:
        """A JSON-ready copy (without ``per_number`` unless asked)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["per_number"] = dict(self.per_number) if numbers else {}
        return data


class BadRequest(EngineError):
    """A send request of the wrong shape; rendered in the family's error format."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message the simulated provider refused."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class SendItem:
    """One message of a send request; ``error`` if it failed the family's validation."""

    to: str
    body: str
    reference: str | None = None
    error: Rejection | None = None
    callback: str | None = None  # this message's receipt URL (``callback_per_request``)


@dataclass(slots=True)
class SimMessage:
    """A message the simulator accepted; its fate is decided when it is accepted."""

    id: str
    to: str
    body: str
    reference: str | None
    final: str = "delivered"  # delivered | undelivered | failed
    settles_at: float = 0.0  # loop time of the final status
    early: asyncio.Event | None = None  # set once an early receipt was posted
    callback: str | None = None  # where its receipts go, if the send request named a URL

    def status_at(self, now: float) -> str:
        """``sent`` until the final status is due."""
        return self.final if now >= self.settles_at else "sent"


@dataclass(slots=True)
class SimEvent:
    """A receipt (``kind`` sent/delivered/undelivered/failed) or a reply (``inbound``)."""

    id: str
    kind: str
    at: datetime
    due: float
    message: SimMessage | None = None
    extra: dict[str, str] = field(default_factory=dict)
    posted: asyncio.Event | None = None


@dataclass(frozen=True, slots=True)
class Post:
    """One webhook call to make."""

    url: str
    headers: dict[str, str]
    body: bytes
