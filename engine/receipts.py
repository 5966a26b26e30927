"""Receipts as stored: the rows of the ``receipts`` log and of ``inbound_messages``.

A provider's word reaches one correct, final status per recipient in four steps, each
in a module of its own and each safe to run in several daemons at once:

* :mod:`engine.receipt_writer` stores what webhooks said, durably, before they are
  answered (group-committed batches of the rows built here);
* :mod:`engine.poller` asks providers that can be asked about sent messages and stores
  their answers the same way (:func:`store_receipts`);
* :mod:`engine.reconciler` applies stored receipts to ``messages`` by the rules of
  :mod:`engine.receipt_rules` (no I/O: forward-only statuses, parts, outcomes);
* :func:`engine.scheduler.complete_runs` closes runs that have nothing left to learn.

This module builds the columns of the batched INSERTs: values PostgreSQL would refuse
are made harmless, or refused for the one caller (:class:`Unstorable`); secrets are
masked. Opt-out keywords live here and only here (:class:`Keywords`): every reply's text
is read, and an adapter's own STOP/START guess for the same reply is ignored. A
provider's opt-out notice with no reply (Zingle's block/unblock webhook) is taken as is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.errors import EngineError
from engine.phones import international, mask
from engine.providers.base import (
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    Inbound,
    OptChange,
    Receipt,
    WebhookEvents,
)
from engine.queries import QUERIES
from engine.redact import Redactor

log = logging.getLogger(__name__)

HELP_WORDS = frozenset({"HELP", "INFO"})
_BIGINT = 2**63
_SMALLINT = 2**15
#: the longest provider id stored: ids are indexed, and a btree entry holds ~2.7 kB at most
MAX_ID = 500


class Unstorable(EngineError):
    """Events PostgreSQL cannot hold (a payload nested too deep, an id too long to index):
    the caller's request is refused, no one else's batch fails with it."""


# --- opt-out keywords ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keywords:
    """Whole-message reply keywords (case-insensitive; surrounding spaces and a trailing
    ``.`` or ``!`` are ignored)."""

    opt_out: frozenset[str] = OPT_OUT_WORDS
    opt_in: frozenset[str] = OPT_IN_WORDS
    help: frozenset[str] = HELP_WORDS

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]) -> Keywords:
        """Keywords from any spelling."""
        return cls(
            *(frozenset(w.strip().upper() for w in words) for words in (opt_out, opt_in, help))
        )

    def action(self, text: str) -> str | None:
        """``opt_out``, ``opt_in``, ``help``, or None for any other text."""
        word = text.strip().rstrip(".!").strip().upper()
        if word in self.opt_out:
            return "opt_out"
        if word in self.opt_in:
            return "opt_in"
        return "help" if word in self.help else None


# --- rows for the batched INSERTs ------------------------------------------------------


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one in a payload must not fail a whole batch."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _id(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_ID:
        raise Unstorable(f"an id of {len(value)} characters (at most {MAX_ID})")
    return _text(value)


def _json(raw: Mapping[str, Any], redact: Redactor) -> str:
    """A payload as JSON text jsonb accepts, secrets masked; raise Unstorable."""
    try:
        return redact.json(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Unstorable(f"payload cannot be stored as JSON: {exc}") from None


def _detail(value: str | None, redact: Redactor) -> str | None:
    return None if value is None else _text(redact.text(value))


def _in_range(value: int | None, limit: int) -> int | None:
    return value if value is not None and 0 <= value < limit else None


def _aware(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


@dataclass(slots=True)
class ReceiptRows:
    """The columns of one ``insert_receipts`` statement."""

    redact: Redactor = field(default_factory=Redactor)
    columns: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(13)))

    def __len__(self) -> int:
        return len(self.columns[0])

    def add(self, account: str, receipt: Receipt) -> None:
        """One receipt, secrets masked; values PostgreSQL would refuse are made harmless,
        or raise Unstorable (before anything is added) where they cannot be."""
        values = (
            account,
            _id(receipt.provider_message_id),
            _in_range(receipt.message_id, _BIGINT),
            _id(receipt.event_id),
            receipt.status.value if receipt.status else None,
            _text(receipt.provider_status),
            _text(receipt.error_code),
            _detail(receipt.error_detail, self.redact),
            _in_range(receipt.part, _SMALLINT),
            _aware(receipt.occurred_at),
            _json(receipt.raw, self.redact),
            receipt.opt_out,
            receipt.rejected is not None,
        )
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)

    def extend(self, other: ReceiptRows) -> None:
        """Append another statement's rows."""
        for column, more in zip(self.columns, other.columns, strict=True):
            column.extend(more)


@dataclass(slots=True)
class InboundRows:
    """The columns of one ``insert_inbound`` statement."""

    keywords: Keywords
    redact: Redactor = field(default_factory=Redactor)
    columns: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in range(8)))

    def __len__(self) -> int:
        return len(self.columns[0])

    def extend(self, other: InboundRows) -> None:
        """Append another statement's rows."""
        for column, more in zip(self.columns, other.columns, strict=True):
            column.extend(more)

    def add(self, account: str, events: WebhookEvents) -> None:
        """Replies (their keyword decides any opt change) and opt notices without a reply."""
        replies = {reply.from_ for reply in events.inbound}
        channels = {c.phone: c.channel for c in events.opt_changes if c.phone in replies}
        for reply in events.inbound:
            self._reply(account, reply, channels.get(reply.from_, "sms"))
        for change in events.opt_changes:
            if change.phone not in replies:  # a notice of its own (Zingle block/unblock)
                self._notice(account, change)

    def _reply(self, account: str, reply: Inbound, channel: str) -> None:
        action, phone = self.keywords.action(reply.text), reply.from_
        if action == "help":
            log.info("HELP from %s", mask(phone), extra={"account": account})
        elif action is not None:
            number = _e164(phone, account)
            action, phone = (action, number) if number else (None, phone)
        self._row(
            account,
            phone,
            channel,
            reply.text,
            reply.provider_message_id,
            reply.in_reply_to,
            action,
            reply.raw,
        )

    def _notice(self, account: str, change: OptChange) -> None:
        phone = _e164(change.phone, account)
        if phone is None:
            return
        action = "opt_out" if change.opted_out else "opt_in"
        self._row(account, phone, change.channel, None, None, None, action, change.raw)

    def _row(
        self,
        account: str,
        phone: str,
        channel: str,
        body: str | None,
        provider_id: str | None,
        in_reply_to: str | None,
        action: str | None,
        raw: Mapping[str, Any],
    ) -> None:
        values = (
            account,
            _id(phone),
            _text(channel),
            _text(body),
            _id(provider_id),
            _id(in_reply_to),
            action,
            _json(raw, self.redact),
        )
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)


def _e164(phone: str, account: str) -> str | None:
    number = international(phone)
    if number is None:
        log.warning(
            "opt change for %s ignored: not an international number",
            mask(phone),
            extra={"account": account},
        )
    return number


async def store_receipts(conn: asyncpg.Connection, rows: ReceiptRows, source: str) -> int:
    """Insert receipts; return how many were new (not seen before by event id)."""
    if not rows:
        return 0
    return int(await conn.fetchval(QUERIES["insert_receipts"], *rows.columns, source))
