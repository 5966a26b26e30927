"""The engine's own provider (account type ``simulator``) and the simulator of every provider.

Two things live here:

* :class:`SimulatorAdapter`, the client of a trivial provider protocol made for the demo,
  the tests and the benchmarks (no credentials, no network beyond this machine):

  - ``POST /sim/v1/messages`` ``{to, body, sender, reference}`` → 200 ``{id}``, or 4xx
    ``{error: {code, detail}}``; 429 carries ``Retry-After``
  - ``POST /sim/v1/messages/bulk`` ``{messages: [...]}`` →
    ``{results: [{id} | {error: {code, detail}}]}``, one per message, in order
  - ``Authorization: Bearer <token>`` when the account has a token (optional)
  - ``GET /sim/v1/account`` → ``{status, credit}`` (the adapter's ``check``)
  - webhook: JSON ``{events: [{id, message_id, reference, status, code, detail, at}]}``
    (``reference`` is our message id; ``id`` the event id, repeated on duplicates), plus
    ``{id, type: "inbound", from, text, in_reply_to, at}`` for replies; authenticated by
    the ``X-Webhook-Secret`` header when the account has a ``webhook_secret``

* the simulator server (:func:`build_app`, :func:`serve`): one aiohttp app that plays every
  provider at its documented paths, with its authentication, validation, error shapes and
  receipts. Each provider is one :class:`ProviderRoutes` subclass (this module's
  :class:`SimulatorRoutes`; the others next to their adapters), registered in
  ``engine.providers.ROUTE_FAMILIES``. The shared machinery decides faults (latency, 429,
  500, hanging requests), rejects numbers, counts everything in :class:`Stats`
  (``GET /sim/stats``) and posts receipts from a background task
  (:class:`ReceiptPoster`), rendered by each family in its provider's format.

  ``POST /sim/inbound/{family}`` ``{from, text, in_reply_to}`` makes a provider family post
  a reply to its webhook, for opt-out tests. ``POST /_sim/credentials`` expires a family's
  credentials (401) or empties its credit (402) mid-run (engine.providers.sim_accounts).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
import orjson
from aiohttp import web
from pydantic import BeforeValidator, Field, SecretStr, model_validator

from engine.providers.base import (
    AccountBase,
    Adapter,
    Inbound,
    MalformedWebhook,
    Outbound,
    Receipt,
    Response,
    SendResult,
    Strict,
    WebhookEvents,
    as_e164,
    client_error,
    decode_body,
    opt_change_for_reply,
)
from engine.status import MessageStatus

log = logging.getLogger(__name__)

# --- the simulator provider: account and adapter -------------------------------------------

#: the simulator protocol's statuses, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    # a receipt comes only after the send was accepted: a later failure is undelivered, as
    # for every provider (``failed`` is for sends refused at the request); the code says why
    "failed": MessageStatus.UNDELIVERED,
}


class SimulatorAccount(AccountBase):
    """An account on the local simulator."""

    default_base_url: ClassVar[str] = "http://127.0.0.1:8090"

    type: Literal["simulator"] = "simulator"
    token: SecretStr | None = None
    bulk: bool = False
    batch_size: int = Field(default=100, ge=1, le=10_000)


class SimulatorAdapter(Adapter[SimulatorAccount]):
    """Client of the simulator protocol."""

    account_model = SimulatorAccount

    def __init__(
        self, name: str, account: SimulatorAccount, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, account, session)
        self.max_batch = account.batch_size if account.bulk else 1

    def auth_headers(self) -> dict[str, str]:
        """A bearer token, when the account has one."""
        token = self.account.token
        return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    def _payload(self, message: Outbound) -> dict[str, Any]:
        sender = message.sender or self.account.sender
        return {"to": message.to, "body": message.body, "sender": sender,
                "reference": str(message.message_id)}

    async def send_one(self, message: Outbound) -> SendResult:
        """``POST /sim/v1/messages``."""
        result = await self._request("POST", "/sim/v1/messages", json=self._payload(message))
        if isinstance(result, SendResult):
            return result
        data = result.json()
        if result.ok:
            return _item_result(data)
        return _error_result(result, data)

    async def send_many(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """``POST /sim/v1/messages/bulk``; results are positional."""
        body = {"messages": [self._payload(m) for m in batch]}
        result = await self._request("POST", "/sim/v1/messages/bulk", json=body)
        if isinstance(result, SendResult):
            return [result] * len(batch)
        data = result.json()
        if not result.ok:
            return [_error_result(result, data)] * len(batch)
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(batch):
            return [SendResult.unknown("bad_response", "results do not match the batch")] * len(
                batch
            )
        return [_item_result(item) for item in items]

    def check_path(self) -> str:
        """``GET /sim/v1/account``."""
        return "/sim/v1/account"

    def parse_webhook(
        self, content_type: str, body: bytes, query: Mapping[str, str]
    ) -> WebhookEvents:
        """``{events: [...]}``: status events become receipts, ``inbound`` ones replies."""
        data = decode_body(content_type or "application/json", body)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise MalformedWebhook("expected {events: [objects]}")
        receipts = [_receipt(e) for e in events if e.get("type", "status") == "status"]
        inbound = [_inbound(e) for e in events if e.get("type") == "inbound"]
        opts = [opt_change_for_reply(i.from_, i.text, i.raw) for i in inbound]
        return WebhookEvents(
            tuple(receipts), tuple(inbound), tuple(o for o in opts if o is not None)
        )


def _item_result(item: Any) -> SendResult:
    if isinstance(item, dict) and item.get("id"):
        return SendResult.accepted(str(item["id"]))
    error = item.get("error") if isinstance(item, dict) else None
    if isinstance(error, dict):
        return SendResult.rejected(str(error.get("code")), error.get("detail"))
    return SendResult.unknown("bad_response", "neither id nor error")


def _error_result(response: Response, data: Any) -> SendResult:
    """A 4xx: 401/403/402 are the account's (``account``), the rest rejections."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("code"):
        return client_error(response.status, str(error["code"]), error.get("detail"))
    return client_error(response.status, str(response.status),
                        response.body[:200].decode(errors="replace"))


def _receipt(event: dict[str, Any]) -> Receipt:
    status = event.get("status")
    if not isinstance(status, str):
        raise MalformedWebhook("event without a status")
    reference = str(event.get("reference") or "")
    if status not in STATUSES:
        log.warning("unknown simulator status %r kept unmapped", status,
                    extra={"provider": "simulator"})
    return Receipt(
        provider_message_id=_opt_str(event.get("message_id")),
        message_id=int(reference) if reference.isdigit() else None,
        status=STATUSES.get(status),
        provider_status=status,
        error_code=_opt_str(event.get("code")),
        error_detail=_opt_str(event.get("detail")),
        event_id=_opt_str(event.get("id")),
        occurred_at=_timestamp(event.get("at")),
        raw=event,
    )


def _inbound(event: dict[str, Any]) -> Inbound:
    sender, text = event.get("from"), event.get("text")
    if not isinstance(sender, str) or not isinstance(text, str):
        raise MalformedWebhook("inbound event without from and text")
    return Inbound(as_e164(sender), text, _opt_str(event.get("id")),
                   _opt_str(event.get("in_reply_to")), event)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- simulator settings and counters -------------------------------------------------------


def _range(value: Any) -> Any:
    """A number means a fixed value; ``[low, high]`` a uniform range."""
    if isinstance(value, int | float):
        return (value, value)
    return value


Seconds = Annotated[tuple[float, float], BeforeValidator(_range)]


class FamilySettings(Strict):
    """How one provider family behaves: faults, rejections and receipts."""

    webhook_url: str | None = None  # where receipts go; None: no receipts
    webhook_secret: str | None = None
    require_token: str | None = None  # None: any credentials of the right shape
    latency: Seconds = (0.0, 0.0)
    rate_limited: float = Field(default=0.0, ge=0, le=1)  # fraction of requests → 429
    retry_after: float = Field(default=1.0, ge=0)
    server_errors: float = Field(default=0.0, ge=0, le=1)  # fraction → 500, nothing taken
    timeouts: float = Field(default=0.0, ge=0, le=1)  # fraction taken, then answered late
    hang: float = Field(default=30.0, ge=0)  # how late (beyond any client timeout)
    reject_suffixes: tuple[str, ...] = ("0000",)  # numbers always rejected
    delivered: float = Field(default=0.9, ge=0, le=1)
    undelivered: float = Field(default=0.05, ge=0, le=1)  # at most 1 - delivered; rest fail
    sent_receipts: bool = True  # report "sent" before the final status
    receipt_delay: Seconds = (0.0, 0.0)  # from sent to the final status
    duplicates: float = Field(default=0.0, ge=0, le=1)  # final receipt posted twice
    out_of_order: float = Field(default=0.0, ge=0, le=1)  # final status before "sent"
    early_receipts: float = Field(default=0.0, ge=0, le=1)  # receipt before the response

    @model_validator(mode="after")
    def _ranges(self) -> FamilySettings:
        for name in ("latency", "receipt_delay"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a number or [low, high] with 0 <= low <= high")
        return self


class SimulatorSettings(Strict):
    """The whole simulator: a default behaviour, overridden per provider family."""

    seed: int = 0
    default: FamilySettings = FamilySettings()
    families: dict[str, FamilySettings] = Field(default_factory=dict)
    max_pending_receipts: int = Field(default=100_000, ge=1)  # beyond this, sends wait
    post_workers: int = Field(default=8, ge=1)  # concurrent receipt POSTs per family
    post_attempts: int = Field(default=3, ge=1)
    post_timeout: float = Field(default=5.0, gt=0)
    credit_balance: Decimal = Decimal("1000000")

    def family(self, name: str) -> FamilySettings:
        """The settings for one provider family."""
        return self.families.get(name, self.default)


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
    per_number: Counter[str] = field(default_factory=Counter)

    def as_dict(self, numbers: bool = True) -> dict[str, Any]:
        """A JSON-ready copy (without ``per_number`` unless asked)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["per_number"] = dict(self.per_number) if numbers else {}
        return data


# --- what the shared machinery passes to the route families --------------------------------


class Fault(Enum):
    """What goes wrong with one request."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


class BadRequest(Exception):
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


# --- the provider families -----------------------------------------------------------------


class ProviderRoutes(ABC):
    """One provider as the simulator plays it: its routes, formats and receipts."""

    #: the family's name in SimulatorSettings.families and /sim/inbound/{family}
    family: ClassVar[str]
    #: receipts one webhook call may carry (1 where the format has one per call)
    receipts_per_post: ClassVar[int] = 1
    #: keep accepted messages for the provider's status lookup
    keeps_messages: ClassVar[bool] = False
    #: the provider deduplicates on a key we send (``SendItem.reference``): a repeat is
    #: answered with the first message and not sent again
    dedupes_references: ClassVar[bool] = False
    #: each send request names its own receipt URL (``SendItem.callback``), so receipts
    #: are posted without a ``webhook_url`` (which, if set, serves requests naming none)
    callback_per_request: ClassVar[bool] = False

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.settings = sim.settings.family(self.family)

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The provider's endpoints (sends use ``send_single`` / ``send_bulk``)."""

    @abstractmethod
    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries acceptable credentials."""

    @abstractmethod
    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """The messages in a send request; raise BadRequest for a wrong shape."""

    @abstractmethod
    def blocked(self, item: SendItem) -> Rejection:
        """The rejection for a number the simulator always rejects."""

    @abstractmethod
    def error(self, status: int, code: str, detail: str) -> web.Response:
        """An error response in the provider's format."""

    @abstractmethod
    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """The answer to a send request."""

    @abstractmethod
    def render(self, events: Sequence[SimEvent]) -> Post | None:
        """The webhook call that reports these events (at most ``receipts_per_post``), or
        None where the provider reports nothing for them."""

    def new_id(self, serial: int) -> str:
        """The provider's id for an accepted message."""
        return str(serial)

    @property
    def posts_receipts(self) -> bool:
        """Whether this family posts receipts at all."""
        return self.settings.webhook_url is not None or self.callback_per_request

    async def send_single(self, request: web.Request) -> web.Response:
        """The single-message send endpoint."""
        return await self.sim.handle_send(self, request, bulk=False)

    async def send_bulk(self, request: web.Request) -> web.Response:
        """The bulk send endpoint."""
        return await self.sim.handle_send(self, request, bulk=True)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class SimulatorRoutes(ProviderRoutes):
    """The simulator's own protocol (see the module docstring)."""

    family = "simulator"
    receipts_per_post = 100

    def routes(self) -> list[web.RouteDef]:
        """Single and bulk send, and the account (for ``engine providers check``)."""
        return [web.post("/sim/v1/messages", self.send_single),
                web.post("/sim/v1/messages/bulk", self.send_bulk),
                web.get("/sim/v1/account", self._account)]

    async def _account(self, request: web.Request) -> web.Response:
        """``{status: active, credit}``, or 401 without the credentials."""
        if not self.authorized(request):
            self.sim.stats.unauthorized += 1
            return self.error(401, "unauthorized", "missing or wrong credentials")
        return json_response({"status": "active", "credit": float(self.sim.credit)})

    def authorized(self, request: web.Request) -> bool:
        """Any request, or a matching bearer token when one is required."""
        token = self.settings.require_token
        return token is None or request.headers.get("Authorization") == f"Bearer {token}"

    def parse_send(self, body: bytes, bulk: bool) -> list[SendItem]:
        """``{to, body, ...}`` or ``{messages: [...]}``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("invalid_json", "body is not JSON") from exc
        if not bulk:
            if not isinstance(data, dict):
                raise BadRequest("invalid_request", "expected an object")
            return [self._item(data)]
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            raise BadRequest("invalid_request", "expected {messages: [objects]}")
        return [self._item(m) for m in messages]

    def _item(self, data: Any) -> SendItem:
        if not isinstance(data, dict):
            return SendItem("", "", None, Rejection("invalid_request", "expected an object"))
        to, text, ref = data.get("to"), data.get("body"), data.get("reference")
        ref = None if ref is None else str(ref)
        if not isinstance(to, str) or not _E164.match(to):
            return SendItem(str(to), "", ref, Rejection("invalid_number", "to must be E.164"))
        if not isinstance(text, str) or not text:
            return SendItem(to, "", ref, Rejection("empty_body", "body must not be empty"))
        return SendItem(to, text, ref)

    def blocked(self, item: SendItem) -> Rejection:
        """``blocked``."""
        return Rejection("blocked", "the number does not accept messages")

    def error(self, status: int, code: str, detail: str) -> web.Response:
        """``{error: {code, detail}}``."""
        return json_response({"error": {"code": code, "detail": detail}}, status)

    def send_response(
        self, outcomes: Sequence[SimMessage | Rejection], bulk: bool
    ) -> web.Response:
        """``{id}``, a 400 error, or ``{results: [...]}``."""
        if not bulk:
            outcome = outcomes[0]
            if isinstance(outcome, Rejection):
                return self.error(400, outcome.code, outcome.detail)
            return json_response({"id": outcome.id})
        return json_response({"results": [
            {"error": {"code": o.code, "detail": o.detail}} if isinstance(o, Rejection)
            else {"id": o.id} for o in outcomes
        ]})

    def render(self, events: Sequence[SimEvent]) -> Post:
        """Many events per call, JSON, ``X-Webhook-Secret``."""
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Webhook-Secret"] = self.settings.webhook_secret
        assert self.settings.webhook_url is not None
        body = orjson.dumps({"events": [self._event(e) for e in events]})
        return Post(self.settings.webhook_url, headers, body)

    def new_id(self, serial: int) -> str:
        """``sim-<n>``."""
        return f"sim-{serial}"

    @staticmethod
    def _event(event: SimEvent) -> dict[str, Any]:
        at = event.at.isoformat()
        if event.kind == "inbound":
            return {"id": event.id, "type": "inbound", "at": at, **event.extra}
        msg = event.message
        assert msg is not None
        code, detail = _FAILURES.get(event.kind, (None, None))
        return {"id": event.id, "message_id": msg.id, "reference": msg.reference,
                "status": event.kind, "code": code, "detail": detail, "at": at}


_FAILURES = {
    "undelivered": ("absent_subscriber", "the handset was unreachable"),
    "failed": ("network_rejected", "the network refused the message"),
}


# --- the shared machinery ------------------------------------------------------------------


class Simulator:
    """State shared by the route families: settings, randomness, counters, receipts."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.stats = Stats()
        self.messages: dict[tuple[str, str], SimMessage] = {}
        self.references: dict[tuple[str, str], SimMessage] = {}  # (family, reference)
        self.credit = settings.credit_balance
        self.stopping = asyncio.Event()
        self.poster = ReceiptPoster(self)
        self._serials = itertools.count(1)

    def serial(self) -> int:
        """A fresh number for ids."""
        return next(self._serials)

    async def handle_send(
        self, routes: ProviderRoutes, request: web.Request, bulk: bool
    ) -> web.Response:
        """Authenticate, validate, inject faults, accept or reject, answer."""
        self.stats.requests += 1
        if not routes.authorized(request):
            self.stats.unauthorized += 1
            return routes.error(401, "unauthorized", "missing or wrong credentials")
        try:
            items = routes.parse_send(await request.read(), bulk)
        except BadRequest as exc:
            self.stats.bad_requests += 1
            return routes.error(400, exc.code, exc.detail)
        fault = await self._fault(routes.settings)
        if fault is Fault.RATE_LIMITED:
            response = routes.error(429, "rate_limited", "too many requests")
            response.headers["Retry-After"] = f"{routes.settings.retry_after:g}"
            return response
        if fault is Fault.SERVER_ERROR:
            return routes.error(500, "internal_error", "simulated server error")
        if routes.posts_receipts:
            await self.poster.room()
        outcomes = [self._accept(routes, item) for item in items]
        await self._await_early(outcomes)
        if fault is Fault.TIMEOUT:
            await self._hang(routes.settings.hang)
        return routes.send_response(outcomes, bulk)

    async def _fault(self, settings: FamilySettings) -> Fault | None:
        low, high = settings.latency
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))
        draw = self.rng.random()
        for fault, fraction, counter in (
            (Fault.RATE_LIMITED, settings.rate_limited, "rate_limited"),
            (Fault.SERVER_ERROR, settings.server_errors, "server_errors"),
            (Fault.TIMEOUT, settings.timeouts, "timeouts"),
        ):
            if draw < fraction:
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
                return fault
            draw -= fraction
        return None

    async def _hang(self, seconds: float) -> None:
        """Answer late; shutting down ends the wait."""
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    def _accept(self, routes: ProviderRoutes, item: SendItem) -> SimMessage | Rejection:
        self.stats.messages += 1
        key = (routes.family, item.reference or "")
        if routes.dedupes_references and item.reference and key in self.references:
            self.stats.duplicates += 1
            return self.references[key]
        rejection = item.error
        if rejection is None and item.to.endswith(routes.settings.reject_suffixes):
            rejection = routes.blocked(item)
        if rejection is not None:
            self.stats.rejected += 1
            return rejection
        message = SimMessage(routes.new_id(self.serial()), item.to, item.body, item.reference,
                             callback=item.callback)
        self.stats.accepted += 1
        self.stats.per_number[item.to] += 1
        self.credit -= 1
        self._decide(routes, message)
        if routes.keeps_messages:
            self.messages[(routes.family, message.id)] = message
        if routes.dedupes_references and item.reference:
            self.references[key] = message
        return message

    def _decide(self, routes: ProviderRoutes, message: SimMessage) -> None:
        """Pick the message's fate and queue its receipts."""
        settings, rng = routes.settings, self.rng
        draw = rng.random()
        undelivered = min(settings.undelivered, 1 - settings.delivered)
        message.final = ("delivered" if draw < settings.delivered else
                         "undelivered" if draw < settings.delivered + undelivered
                         else "failed")
        delay = rng.uniform(*settings.receipt_delay)
        now, wall = asyncio.get_running_loop().time(), datetime.now(UTC)
        message.settles_at = now + delay
        if not routes.posts_receipts or (settings.webhook_url is None and message.callback is None):
            return
        final = SimEvent(f"evt-{self.serial()}", message.final,
                         wall + timedelta(seconds=delay), now + delay, message)
        events = [final]
        if settings.sent_receipts:
            sent_due = final.due + 0.005 if rng.random() < settings.out_of_order else now
            events.append(SimEvent(f"evt-{self.serial()}", "sent", wall, sent_due, message))
        if rng.random() < settings.duplicates:
            events.append(replace(final, due=final.due + 0.005))
        if rng.random() < settings.early_receipts:
            first = min(events, key=lambda e: e.due)
            first.due = now
            first.posted = message.early = asyncio.Event()
        for event in events:
            self.poster.submit(routes, event)

    async def _await_early(self, outcomes: Sequence[SimMessage | Rejection]) -> None:
        """Hold the response until early receipts were posted (at most 2 s)."""
        waits = [o.early.wait() for o in outcomes if isinstance(o, SimMessage) and o.early]
        if waits:
            with suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.gather(*waits)

    def inbound(self, routes: ProviderRoutes, extra: dict[str, str]) -> None:
        """Queue a reply for a family's webhook."""
        loop_now, wall = asyncio.get_running_loop().time(), datetime.now(UTC)
        self.poster.submit(routes, SimEvent(f"in-{self.serial()}", "inbound", wall, loop_now,
                                            extra=extra))


class ReceiptPoster:
    """Posts queued events to each family's webhook when they are due.

    One scheduler task keeps a heap by due time and hands due events to the family's
    ready queue; ``post_workers`` workers per family take up to ``receipts_per_post``
    events at a time, render them and POST, retrying ``post_attempts`` times before
    counting them dropped. When ``max_pending_receipts`` events wait, send requests wait
    for room (``room``) before accepting more, so receipts are never lost to a full queue
    and a slow webhook receiver slows the senders down.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.pending = 0
        #: set while no event waits to be posted
        self.idle = asyncio.Event()
        self.idle.set()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._inbox: asyncio.Queue[tuple[float, int, ProviderRoutes, SimEvent]] = (
            asyncio.Queue()
        )
        self._ready: dict[str, asyncio.Queue[SimEvent]] = {}
        self._order = itertools.count()

    async def room(self) -> None:
        """Wait while ``max_pending_receipts`` events wait to be posted."""
        await self._has_room.wait()

    def release(self) -> None:
        """Stop making senders wait (shutting down)."""
        self._has_room.set()

    def submit(self, routes: ProviderRoutes, event: SimEvent) -> None:
        """Queue an event to be posted when due."""
        self.pending += 1
        self.idle.clear()
        if self.pending >= self.sim.settings.max_pending_receipts:
            self._has_room.clear()
        self._inbox.put_nowait((event.due, next(self._order), routes, event))

    async def run(self, session: aiohttp.ClientSession, families: Sequence[ProviderRoutes]) -> None:
        """Schedule and post until cancelled; a crashed worker stops them all."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._schedule(), name="sim-receipt-scheduler")
            for routes in families:
                if not routes.posts_receipts:
                    continue
                self._ready[routes.family] = asyncio.Queue()
                for n in range(self.sim.settings.post_workers):
                    group.create_task(self._worker(session, routes),
                                      name=f"sim-receipts-{routes.family}-{n}")

    async def _schedule(self) -> None:
        heap: list[tuple[float, int, ProviderRoutes, SimEvent]] = []
        loop = asyncio.get_running_loop()
        while True:
            wait = max(0.0, heap[0][0] - loop.time()) if heap else None
            with suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    heapq.heappush(heap, await self._inbox.get())
            while not self._inbox.empty():
                heapq.heappush(heap, self._inbox.get_nowait())
            now = loop.time()
            while heap and heap[0][0] <= now:
                _, _, routes, event = heapq.heappop(heap)
                self._ready[routes.family].put_nowait(event)

    async def _worker(self, session: aiohttp.ClientSession, routes: ProviderRoutes) -> None:
        ready = self._ready[routes.family]
        while True:
            batch = [await ready.get()]
            while len(batch) < routes.receipts_per_post and not ready.empty():
                batch.append(ready.get_nowait())
            post = routes.render(batch)
            posted = None if post is None else await self._post(session, post)
            self.pending -= len(batch)
            self._done(batch, posted)
            if self.pending < self.sim.settings.max_pending_receipts:
                self._has_room.set()
            if not self.pending:
                self.idle.set()

    async def _post(self, session: aiohttp.ClientSession, post: Post) -> bool:
        attempts = self.sim.settings.post_attempts
        for attempt in range(attempts):
            try:
                async with session.post(post.url, data=post.body, headers=post.headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        return True
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("receipt post failed: %s", exc)
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * 2**attempt)
        return False

    def _done(self, events: Sequence[SimEvent], posted: bool | None) -> None:
        if posted:
            self.sim.stats.receipts_posted += len(events)
        elif posted is not None:  # None: nothing was to be posted
            self.sim.stats.receipts_dropped += len(events)
        for event in events:
            if event.posted is not None:
                event.posted.set()


# --- the app -------------------------------------------------------------------------------

SIMULATOR = web.AppKey("simulator", Simulator)
STATS = web.AppKey("stats", Stats)
FAMILIES = web.AppKey("families", dict[str, ProviderRoutes])


def build_app(
    settings: SimulatorSettings, families: Sequence[type[ProviderRoutes]] | None = None
) -> web.Application:
    """The simulator as an aiohttp app (every registered provider family by default)."""
    if families is None:
        # imported here: the registry imports this module for SimulatorAccount
        from engine.providers import ROUTE_FAMILIES

        families = ROUTE_FAMILIES
    sim = Simulator(settings)
    app = web.Application()
    app[SIMULATOR] = sim
    app[STATS] = sim.stats
    app[FAMILIES] = {cls.family: cls(sim) for cls in families}
    owners = {route.resource: routes for routes in app[FAMILIES].values()
              for route in app.router.add_routes(routes.routes()) if route.resource}
    from engine.providers import sim_accounts  # it builds on this module

    sim_accounts.install(app, owners, sim.stats)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/inbound/{family}", _inbound_route)
    app.on_shutdown.append(_release_hanging)
    app.cleanup_ctx.append(_receipts)
    return app


async def _stats(request: web.Request) -> web.Response:
    numbers = request.query.get("numbers", "1") not in ("0", "false", "no")
    return json_response(request.app[STATS].as_dict(numbers))


async def _inbound_route(request: web.Request) -> web.Response:
    routes = request.app[FAMILIES].get(request.match_info["family"])
    if routes is None or routes.settings.webhook_url is None:
        return json_response({"error": "unknown family, or it has no webhook_url"}, 404)
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not data.get("from") or not data.get("text"):
        return json_response({"error": "expected {from, text, in_reply_to?}"}, 400)
    request.app[SIMULATOR].inbound(routes, {k: str(v) for k, v in data.items() if v is not None})
    return json_response({"queued": True}, 202)


async def _release_hanging(app: web.Application) -> None:
    app[SIMULATOR].stopping.set()
    app[SIMULATOR].poster.release()


async def _receipts(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    timeout = aiohttp.ClientTimeout(total=sim.settings.post_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        task = asyncio.create_task(
            sim.poster.run(session, list(app[FAMILIES].values())), name="sim-receipts"
        )
        yield
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator receipt poster failed", exc_info=task.exception())


@dataclass(slots=True)
class RunningSimulator:
    """A simulator listening on a port; ``async with`` it or call ``close``."""

    runner: web.AppRunner
    url: str

    @property
    def app(self) -> web.Application:
        """The aiohttp application."""
        return self.runner.app

    @property
    def stats(self) -> Stats:
        """Live counters."""
        return self.runner.app[STATS]

    async def receipts_done(self) -> None:
        """Wait until every queued receipt was posted (or dropped)."""
        await self.runner.app[SIMULATOR].poster.idle.wait()

    async def close(self) -> None:
        """Stop listening, release hanging requests, stop posting receipts."""
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(
    settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8090
) -> RunningSimulator:
    """Start the simulator on ``host:port`` (0 picks a free port) and return it running."""
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return RunningSimulator(runner, f"http://{bound_host}:{bound_port}")
