"""Secrets kept out of what the engine stores and logs.

A :class:`Redactor` knows every secret of the configured accounts (webhook secrets, API
tokens, passwords: every ``SecretStr`` of an account, see
:meth:`engine.providers.base.AccountBase.secret_values`) and replaces each, as written
and URL-encoded (courier echoes its ``callback-status-url``, which carries
``?secret=``), by ``**********``. It is applied to every payload stored from a provider
(``receipts.raw``, ``inbound_messages.raw``, error details) and, as a logging filter, to
every log line of the daemon. Secrets shorter than :data:`MIN_REDACTED` characters are
left alone (a config file cannot hold one: see :data:`engine.config.MIN_SECRET`), so a
test's one-letter secret does not mangle every payload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import orjson

MASK = "**********"
MIN_REDACTED = 8
#: orjson refuses integers past 64 bits; such a value is stored as text
_INT_RANGE = range(-(2**63), 2**64)


class Redactor:
    """Replaces known secrets in text, payloads and log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = frozenset(secret for secret in secrets if len(secret) >= MIN_REDACTED)
        forms = {
            form
            for secret in self._secrets
            for form in (secret, quote(secret, safe=""), quote_plus(secret))
        }
        # longest first, so a secret that contains another is masked whole
        self._forms = sorted(forms, key=len, reverse=True)
        self._needles = frozenset(
            needle for form in self._forms for needle in (form.encode(), orjson.dumps(form)[1:-1])
        )

    @classmethod
    def of(cls, accounts: Iterable[Any]) -> Redactor:
        """A redactor for the secrets of these accounts (or of these adapters' accounts)."""
        return cls(
            secret for item in accounts for secret in getattr(item, "account", item).secret_values()
        )

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, value: str) -> str:
        """``value`` with every secret masked (percent-encoded in any way, too: a text that
        holds a secret only once decoded is kept decoded, and masked)."""
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        if "%" in value and self._secrets:
            for decode in (unquote, unquote_plus):
                decoded = decode(value)
                if any(secret in decoded for secret in self._secrets):
                    return self.text(decoded)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-like value with every secret masked in its strings (keys included)."""
        if isinstance(value, str):
            return self.text(value).replace("\x00", "\ufffd")  # jsonb refuses \u0000
        if isinstance(value, Mapping):
            return {
                self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT_RANGE:
            return str(value)
        return value

    def json(self, value: Any) -> str:
        """``value`` as JSON text jsonb accepts, secrets masked; raise TypeError (orjson's
        JSONEncodeError) for what cannot be JSON, such as nesting past 254 levels."""
        try:
            data = orjson.dumps(value, default=str)
        except orjson.JSONEncodeError:
            data = orjson.dumps(self.value(value), default=str)  # big integers: as text
        if (
            b"\\u0000" in data
            or any(needle in data for needle in self._needles)
            or (b"%" in data and self._forms)
        ):
            data = orjson.dumps(self.value(value), default=str)
        return data.decode()

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter: mask secrets in the record's message and traceback text."""
        if not self._forms:
            return True
        message = record.getMessage()
        masked = self.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            masked = self.text(record.exc_text)
            if masked != record.exc_text:
                # a formatter that renders exc_info itself would print the secret again
                record.exc_text, record.exc_info = masked, None
        return True
