"""``/webhooks/{account}[/{secret}]``: provider callbacks, stored durably before they are
answered.

Every account takes ``POST`` and ``GET`` (ZoomConnect may call its report URL with GET) on
two URL forms:

* ``/webhooks/{account}``, the secret where its provider puts it (a header, or
  ``?secret=``: :attr:`~engine.providers.base.Adapter.webhook_secret_in`);
* ``/webhooks/{account}/{secret}``, the secret in the path (percent-encoded), for every
  provider: the form for a provider that can send no header and appends its own query to
  the URL it is given (ZoomConnect: ``…?status=…``, ``…?&status=…`` or, with a bare ``&``,
  ``…/{secret}&status=…&messageId=…``). The secret is read from the raw path (before
  percent-decoding), cut at its first ``&``; what follows the ``&`` is parsed as query
  parameters and handed to the adapter with the real query (which wins on a clash). On
  this form only the path secret counts; an empty one is a wrong one.

The path secret is never logged: the listener writes no access log, and should one be
turned on, a filter on ``aiohttp.access`` masks the segment after ``/webhooks/{account}/``
(:func:`mask_path_secrets`).

For every call, in this order:

==========================  ==============================================================
unknown account             404
not authentic               401, body not read: the account's secret did not come where
                            its provider puts it (a header, or ``?secret=``), compared in
                            constant time by the adapter; a header that is not even text
                            (invalid UTF-8) is not the secret either. An account with no
                            ``webhook_secret`` answers 401 to everything (an open endpoint
                            would let anyone fake receipts and opt-outs).
unreadable                  400, logged with a short excerpt and stored as rejected in
                            ``rejected_webhooks`` (:mod:`engine.rejected`: a bounded
                            excerpt, secrets masked): the adapter could not read the body,
                            or what it read cannot be stored (nested past 254 levels, an
                            id too long to index, a value PostgreSQL refuses). A provider
                            retries a 5xx for ever, so a payload that will never be stored
                            must not get one (a 503 only if the rejected row cannot be
                            written because the database is out of reach).
stored                      200, only once :meth:`ReceiptWriter.write` committed it
not stored                  503, only when storing may work later (the database is out of
                            reach, the daemon is stopping, or the commit took longer than
                            ``answer_within``): every provider retries a 5xx, and a repeat
                            is deduplicated
==========================  ==============================================================

A simulator account without a ``webhook_secret`` is a configuration error here (the
handler refuses to start, so ``engine run`` with no engine.yaml stops with a hint):
only ``engine demo`` and tests, which build the handler in code, may name such accounts
in ``open_accounts`` to accept any caller.

A well-formed event with a status we do not know is stored (status NULL) and logged, not
refused. Nothing here blocks on anything but the group commit, so calls are answered in
milliseconds under load (Zenvia counts a reply slower than 1 s as a failure).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from engine.errors import ConfigError
from engine.providers.base import AccountBase, Adapter, MalformedWebhook, WebhookEvents
from engine.receipt_writer import ReceiptWriter
from engine.receipts import Unstorable
from engine.redact import MASK
from engine.rejected import store_rejected

log = logging.getLogger(__name__)

#: how much of a refused body goes into the log
EXCERPT = 200
#: errors an adapter may raise on a body it cannot read, beyond MalformedWebhook
_UNREADABLE = (
    MalformedWebhook,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)
#: storage refused the data itself (retrying cannot help): invalid values (22xxx),
#: constraints (23xxx), limits such as an index entry too large (54xxx)
_REFUSED = (
    Unstorable,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
#: the database is out of reach: a refused call cannot be stored as rejected either
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
#: ``/webhooks/{account}/`` and the secret segment after it (up to a space or the query)
_PATH_SECRET = re.compile(r"(/webhooks/[^/\s?]+/)[^\s?\"']+")


def path_secret(raw_path: str) -> tuple[str, list[tuple[str, str]]] | None:
    """The secret of ``/webhooks/{account}/{secret}[&k=v…]`` (percent-decoded) and the
    parameters glued after it with a bare ``&``; None for a path without a secret segment.

    ``raw_path`` is the path as sent (``request.raw_path``): a ``&`` the provider glued on
    is a separator there, while one that belongs to the secret is ``%26``."""
    path = raw_path.partition("?")[0]
    _, webhooks, after = path.partition("/webhooks/")
    _, slash, segment = after.partition("/")
    if not webhooks or not slash:
        return None
    secret, _, tail = segment.partition("&")
    return unquote(secret), parse_qsl(tail, keep_blank_values=True)


def mask_path_secrets(record: logging.LogRecord) -> bool:
    """A logging filter: mask the secret segment of ``/webhooks/{account}/{secret}`` in a
    record's message and in its string extras (aiohttp's access log passes the request
    line as ``first_request_line``)."""
    message = record.getMessage()
    masked = _PATH_SECRET.sub(rf"\g<1>{MASK}", message)
    if masked != message:
        record.msg, record.args = masked, None
    for key, value in list(record.__dict__.items()):
        if key not in ("msg", "message") and isinstance(value, str) and "/webhooks/" in value:
            setattr(record, key, _PATH_SECRET.sub(rf"\g<1>{MASK}", value))
    return True


def _mask_access_log() -> None:
    """Install :func:`mask_path_secrets` on aiohttp's access logger (once)."""
    logger = logging.getLogger("aiohttp.access")
    if mask_path_secrets not in logger.filters:
        logger.addFilter(mask_path_secrets)


def listener_logger() -> logging.Logger:
    """The logger to give the listener's ``AppRunner``: a request that is not even HTTP
    (a control character in a header, a broken request line) is one warning line, where
    aiohttp's own logger would write a traceback that echoes the offending header."""
    logger = logging.getLogger("engine.webhooks.http")
    if _bad_http_one_line not in logger.filters:
        logger.addFilter(_bad_http_one_line)
    return logger


def _bad_http_one_line(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        reason = str(exc.message).strip().splitlines()[:1] or ["?"]
        record.msg, record.args = "bad HTTP request refused (%d): %s", (exc.code, reason[0])
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def require_secrets(
    accounts: Mapping[str, AccountBase], open_accounts: Collection[str] = ()
) -> None:
    """Raise ConfigError for an account whose provider signs nothing, with no ``webhook_secret``.

    Such accounts (``webhook_needs_secret``: the simulator) may go without one only when
    named in ``open_accounts`` (the demo and tests).
    """
    for name, account in accounts.items():
        if (
            account.webhook_secret is None
            and name not in open_accounts
            and account.webhook_needs_secret
        ):
            raise ConfigError(
                f"providers.{name}.webhook_secret: a {account.type} account needs one to serve"
                " webhooks (anyone could post its receipts and opt-outs): set it in"
                " engine.yaml, or try `engine demo`"
            )


def same_secret(given: str, wanted: str) -> bool:
    """Constant-time comparison that never raises, whatever bytes ``given`` came from."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), wanted.encode("utf-8", "surrogateescape")
    )


@dataclass(slots=True)
class WebhookStats:
    """Calls by ``(account, result)`` and events stored by account, for metrics.

    Results: ``accepted``, ``unauthorized``, ``malformed``, ``failed`` (503). Calls to
    account names we do not have are counted in ``unknown_account`` alone, so a scanner
    cannot grow the label set.
    """

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    unknown_account: int = 0
    receipts: Counter[str] = field(default_factory=Counter)
    inbound: Counter[str] = field(default_factory=Counter)
    opt_changes: Counter[str] = field(default_factory=Counter)

    def total(self, result: str) -> int:
        """Calls with this result, over all accounts."""
        return sum(n for (_, outcome), n in self.calls.items() if outcome == result)

    @property
    def received(self) -> int:
        """Calls to known accounts, whatever their result."""
        return sum(self.calls.values())

    @property
    def unauthorized(self) -> int:
        """Calls refused with 401."""
        return self.total("unauthorized")

    @property
    def malformed(self) -> int:
        """Calls refused with 400."""
        return self.total("malformed")

    def count(self, account: str, events: WebhookEvents) -> None:
        """Events of one stored call."""
        self.receipts[account] += len(events.receipts)
        self.inbound[account] += len(events.inbound)
        self.opt_changes[account] += len(events.opt_changes)


class WebhookHandler:
    """The webhook endpoint of every configured account."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter[Any]],
        writer: ReceiptWriter,
        *,
        open_accounts: Collection[str] = (),
        answer_within: float = 4.0,
    ) -> None:
        self.adapters = dict(adapters)
        self.writer = writer
        #: a call not stored by then is answered 503 (its events are still written, and the
        #: provider's retry is deduplicated): under its read timeout (Zenvia's is 5 s, and
        #: a timeout counts as ten failures there)
        self.answer_within = answer_within
        self.stats = WebhookStats()
        self._open = frozenset(
            name
            for name, adapter in self.adapters.items()
            if adapter.account.webhook_secret is None and name in open_accounts
        )
        require_secrets({name: a.account for name, a in self.adapters.items()}, self._open)
        _mask_access_log()
        for name, adapter in self.adapters.items():
            if adapter.account.webhook_secret is None and name not in self._open:
                log.warning(
                    "%s has no webhook_secret: its webhook refuses every call (401)",
                    name,
                    extra={"account": name},
                )

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the daemon's app."""
        return [
            web.post("/webhooks/{account}", self.handle),
            web.get("/webhooks/{account}", self.handle, allow_head=False),
            web.post("/webhooks/{account}/{secret:.*}", self.handle),
            web.get("/webhooks/{account}/{secret:.*}", self.handle, allow_head=False),
        ]

    async def handle(self, request: web.Request) -> web.Response:
        """Authenticate, parse, store, answer."""
        name = request.match_info["account"]
        adapter = self.adapters.get(name)
        if adapter is None:
            self.stats.unknown_account += 1
            return _answer(404, "unknown account")
        in_path = path_secret(request.raw_path) if "secret" in request.match_info else None
        if not self._authentic(name, adapter, request, in_path):
            self.stats.calls[name, "unauthorized"] += 1
            log.warning(
                "webhook call without the right secret refused",
                extra={"account": name, "remote": request.remote},
            )
            return _answer(401, "unauthorized")
        params: Mapping[str, str] = request.query
        if in_path is not None and in_path[1]:
            params = {**dict(in_path[1]), **request.query}
        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        try:
            events = adapter.parse_webhook(ctype, body, params)
        except _UNREADABLE as exc:
            bug = not isinstance(exc, MalformedWebhook | ValueError)
            return await self._reject(name, adapter, ctype, params, body, exc, bug=bug)
        try:
            return await self._store(name, events)
        except _REFUSED as exc:  # storing can never work: a retry must not be invited
            return await self._reject(name, adapter, ctype, params, body, exc)

    def _authentic(
        self,
        name: str,
        adapter: Adapter[Any],
        request: web.Request,
        in_path: tuple[str, list[tuple[str, str]]] | None,
    ) -> bool:
        secret = adapter.account.webhook_secret
        if secret is None:
            return name in self._open
        if in_path is not None:  # the path form: only the path's secret counts
            given = in_path[0].strip()  # ZoomConnect's example pads its joins with spaces
            return bool(given) and same_secret(given, secret.get_secret_value())
        try:
            return adapter.webhook_authentic(request.headers, request.query)
        except (UnicodeError, ValueError):  # a header that is not text is not our secret
            return False

    async def _reject(
        self,
        name: str,
        adapter: Adapter[Any],
        ctype: str,
        params: Mapping[str, str],
        body: bytes,
        exc: BaseException,
        *,
        bug: bool = False,
    ) -> web.Response:
        """Answer 400 to a call that authenticated but cannot be stored, once it is stored
        as rejected (503 if even that cannot be done for want of the database)."""
        self._refused(name, body, exc, bug=bug)
        hidden = adapter.webhook_secret_name if adapter.webhook_secret_in == "query" else None
        kept = {k: v for k, v in params.items() if k != hidden}
        try:
            async with asyncio.timeout(self.answer_within):
                await store_rejected(
                    self.writer.pool,
                    name,
                    str(exc) or type(exc).__name__,
                    ctype,
                    kept,
                    body,
                    self.writer.redact,
                )
        except _UNAVAILABLE as err:
            self.stats.calls[name, "failed"] += 1
            log.error(
                "rejected webhook call not stored, answered 503: %s",
                self.writer.redact.text(repr(err)),
                extra={"account": name},
            )
            return _answer(503, "not stored, try again")
        except Exception as err:  # the row itself was refused: the call is still a 400
            log.error(
                "rejected webhook call not stored: %s",
                self.writer.redact.text(repr(err)),
                extra={"account": name},
            )
        return _answer(400, "malformed")

    def _refused(self, name: str, body: bytes, exc: BaseException, *, bug: bool = False) -> None:
        """Log a call answered 400: its reason and a masked excerpt of its body."""
        self.stats.calls[name, "malformed"] += 1
        redact = self.writer.redact
        # masked before it is cut, so no secret is left half-visible at the cut
        excerpt = redact.text(body[: 16 * EXCERPT].decode(errors="replace"))[:EXCERPT]
        log.warning(
            "malformed webhook refused: %s: %r",
            redact.text(str(exc))[:EXCERPT],
            excerpt,
            exc_info=exc if bug else None,
            extra={"account": name},
        )

    async def _store(self, name: str, events: WebhookEvents) -> web.Response:
        """Write the events; raise what _REFUSED names (the caller stores them as rejected)."""
        try:
            async with asyncio.timeout(self.answer_within):
                await self.writer.write(name, events)
        except _REFUSED:
            raise
        except Exception as exc:  # the database, or the daemon stopping: the provider retries
            self.stats.calls[name, "failed"] += 1
            log.error(
                "webhook call not stored, answered 503: %s",
                self.writer.redact.text(repr(exc)),
                extra={"account": name},
            )
            return _answer(503, "not stored, try again")
        self.stats.calls[name, "accepted"] += 1
        self.stats.count(name, events)
        return _answer(200, "ok")


def _answer(status: int, text: str) -> web.Response:
    return web.Response(
        body=_BODIES.get(text) or orjson.dumps({"status": text}),
        status=status,
        content_type="application/json",
    )


#: the answers, encoded once (the 200 is on the hot path)
_BODIES = {
    text: orjson.dumps({"status": text})
    for text in ("ok", "unknown account", "unauthorized", "malformed", "not stored, try again")
}
