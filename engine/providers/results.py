"""What passes between the engine and an adapter: messages out, send outcomes, receipts in.

A send's :class:`Outcome` is decided as the table in :mod:`engine.providers.base` says;
:class:`Receipt`, :class:`Inbound` and :class:`OptChange` are what a webhook call or a poll
told us, gathered in :class:`WebhookEvents`; :class:`Response` is one HTTP answer read in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from engine.errors import EngineError
from engine.status import MessageStatus


class Outcome(StrEnum):
    """What a send proved about one message."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RETRY = "retry"
    UNKNOWN = "unknown"
    ACCOUNT = "account"


class AccountReason(StrEnum):
    """Why an account cannot send (``Outcome.ACCOUNT``)."""

    AUTH = "auth"  # credentials refused, expired or the account suspended
    CREDIT = "credit"  # no credit left


#: HTTP statuses that are the account's problem, not the message's
ACCOUNT_STATUSES: Mapping[int, AccountReason] = {
    401: AccountReason.AUTH,
    403: AccountReason.AUTH,
    402: AccountReason.CREDIT,
}


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to hand to a provider; ``message_id`` is our ``messages.id``."""

    message_id: int
    to: str
    body: str
    sender: str | None = None
    channel: str = "sms"
    encoding: str = "GSM-7"
    segments: int = 1


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one message."""

    outcome: Outcome
    provider_message_id: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    retry_after: float | None = None
    #: why the account cannot send (``Outcome.ACCOUNT`` only)
    reason: AccountReason | None = None

    @classmethod
    def accepted(cls, provider_message_id: str) -> SendResult:
        """The provider took the message and gave it this id."""
        return cls(Outcome.ACCEPTED, provider_message_id)

    @classmethod
    def rejected(cls, code: str, detail: str | None = None) -> SendResult:
        """The provider refused the message for good."""
        return cls(Outcome.REJECTED, None, code, detail)

    @classmethod
    def retry(cls, code: str, detail: str | None = None, after: float | None = None) -> SendResult:
        """The provider provably did not take the message; send it again later."""
        return cls(Outcome.RETRY, None, code, detail, after)

    @classmethod
    def unknown(cls, code: str, detail: str | None = None) -> SendResult:
        """The provider may or may not have taken the message."""
        return cls(Outcome.UNKNOWN, None, code, detail)

    @classmethod
    def account(cls, reason: AccountReason, code: str, detail: str | None = None) -> SendResult:
        """The account cannot send (credentials, suspension, credit): not the message's fault."""
        return cls(Outcome.ACCOUNT, None, code, detail, None, reason)


def client_error(
    status: int, code: str, detail: str | None, reason: AccountReason | None = None
) -> SendResult:
    """A 4xx answer: the account's problem for 401/403/402 (or when the adapter names a
    ``reason`` for a documented code), else a rejection of the message."""
    reason = reason or ACCOUNT_STATUSES.get(status)
    if reason is not None:
        return SendResult.account(reason, code, detail)
    return SendResult.rejected(code, detail)


class CheckFailed(EngineError):
    """An account check did not authenticate: ``reason`` (auth, credit) when the provider
    refused it, None when the provider could not be reached."""

    def __init__(self, message: str, reason: AccountReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Receipt:
    """A status report for one sent message.

    ``status`` is None for a provider status we do not know; ``provider_status`` always
    keeps the provider's own word. ``message_id`` is our id where the provider echoes it.
    ``opt_out``: the provider's code says the recipient opted out (ZoomConnect's
    ``FAILED_OPTOUT``): once the receipt is settled against its message, that message's
    number is suppressed on its channel. ``rejected``: why one event of an otherwise
    readable call could not be read; it is stored settled with outcome ``rejected`` and
    never applied.
    """

    provider_message_id: str | None
    message_id: int | None
    status: MessageStatus | None
    provider_status: str
    error_code: str | None = None
    error_detail: str | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None
    part: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    opt_out: bool = False
    rejected: str | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message a recipient sent us (a reply)."""

    from_: str
    text: str
    provider_message_id: str | None = None
    in_reply_to: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OptChange:
    """A recipient opted out of (or back into) messages on a channel."""

    phone: str
    opted_out: bool
    channel: str = "sms"
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookEvents:
    """Everything one webhook call told us."""

    receipts: tuple[Receipt, ...] = ()
    inbound: tuple[Inbound, ...] = ()
    opt_changes: tuple[OptChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
