"""Reading a webhook call's body: JSON or form data, and opt-out keywords in replies."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from engine.errors import EngineError
from engine.providers.results import OptChange


class MalformedWebhook(EngineError):
    """A webhook body this adapter cannot read; the message is a short reason."""


#: single-word replies that opt a number out, or back in (the industry-standard keywords)
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "OPTIN"})


def opt_change_for_reply(phone: str, text: str, raw: dict[str, Any]) -> OptChange | None:
    """An OptChange when a reply is exactly one opt-out or opt-in keyword."""
    word = text.strip().strip(".!").upper()
    if word in OPT_OUT_WORDS:
        return OptChange(phone, True, "sms", raw)
    if word in OPT_IN_WORDS:
        return OptChange(phone, False, "sms", raw)
    return None


def decode_body(content_type: str, body: bytes) -> Any:
    """A webhook body as JSON or as form parameters (a dict); raise MalformedWebhook."""
    ctype = content_type.partition(";")[0].strip().lower()
    if not body.strip():
        return {}
    if ctype.endswith("json") or (not ctype and body.lstrip()[:1] in (b"{", b"[")):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedWebhook("body is not valid JSON") from exc
    if ctype in ("application/x-www-form-urlencoded", ""):
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedWebhook("body is not valid form data") from exc
    raise MalformedWebhook(f"unsupported content type {ctype!r}")
