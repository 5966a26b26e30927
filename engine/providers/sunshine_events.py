"""Reading SunCo v2 webhook events: pure functions, no I/O (the adapter is in sunshine.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.providers.base import MalformedWebhook, Receipt
from engine.status import MessageStatus

log = logging.getLogger(__name__)

#: v2 webhook event types that report on a message we sent, onto ours
STATUSES: Mapping[str, MessageStatus] = {
    "conversation:message:delivery:channel": MessageStatus.SENT,
    "conversation:message:delivery:user": MessageStatus.DELIVERED,
    "conversation:message:delivery:failure": MessageStatus.UNDELIVERED,
}
DELIVERY = "conversation:message:delivery:"
MESSAGE = "conversation:message"
#: what ``subscribe`` asks SunCo to post
TRIGGERS = (MESSAGE, *STATUSES)

PHONE = re.compile(r"^\+[1-9]\d{6,14}$")


def dig(data: Any, *keys: str, raw: bool = False) -> Any:
    """``data[k1][k2]…``; a non-empty string (or, with ``raw``, anything), else None."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    if raw:
        return data
    return str(data) if isinstance(data, str | int) and data != "" else None


def kind_of(event: Any) -> str:
    """An event's type; MalformedWebhook unless it is an object with a type and a payload."""
    if not isinstance(event, dict):
        raise MalformedWebhook("an event that is not an object")
    kind = event.get("type")
    if not isinstance(kind, str) or not isinstance(event.get("payload"), dict):
        raise MalformedWebhook("event without a type and a payload")
    return kind


def unreadable(event: Any, reason: str) -> Receipt:
    """An event that could not be read, kept as rejected (stored, never applied) so it is
    not lost and an analyst finds it (outcome ``rejected``, the reason in error_detail)."""
    raw = event if isinstance(event, dict) else {"event": event}
    kind = raw.get("type") if isinstance(raw.get("type"), str) else "?"
    return Receipt(
        provider_message_id=dig(raw, "payload", "message", "id"),
        message_id=None,
        status=None,
        provider_status=f"malformed:{kind}",
        error_code="malformed",
        error_detail=reason,
        event_id=dig(raw, "id"),
        occurred_at=timestamp(raw.get("createdAt")),
        raw=raw,
        rejected=reason,
    )


def receipt(kind: str, event: dict[str, Any]) -> Receipt:
    """A delivery event as a Receipt, matched on ``payload.message.id``."""
    payload = event["payload"]
    provider_id = dig(payload, "message", "id")
    if provider_id is None:
        raise MalformedWebhook(f"{kind} without payload.message.id")
    status = STATUSES.get(kind)
    if status is None:
        log.warning(
            "unknown SunCo delivery event %r kept unmapped", kind, extra={"provider": "sunshine"}
        )
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    detail = dig(error, "message") or dig(error, "underlyingError", "message")
    return Receipt(
        provider_message_id=provider_id,
        message_id=None,
        status=status,
        provider_status=kind,
        error_code=opt_str(error.get("code")),
        error_detail=detail,
        event_id=opt_str(event.get("id")),
        occurred_at=timestamp(event.get("createdAt")),
        raw=event,
    )


def opt_str(value: Any) -> str | None:
    """None for None or an empty string, else the value as a string."""
    return None if value is None or value == "" else str(value)


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` allowed; UTC if naive), or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
