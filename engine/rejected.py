"""Webhook calls refused with a 400 although they authenticated, kept for analysts.

A provider retries a 5xx for ever, so a payload that can never be stored is answered 400
(:mod:`engine.webhooks`); it must not vanish with the answer either. Each such call is one
row of ``rejected_webhooks`` (migration 0010): the account, why, the content type, the
URL's parameters without the secret, the body's size and a bounded excerpt of it, every
secret masked (by the accounts' :class:`~engine.redact.Redactor`) before it is cut, so no
secret is left half-visible at the cut. The whole body is never kept: a payload refused
for its size or depth would be refused again. One unreadable event of a call that is
otherwise read is a receipt with outcome ``rejected`` instead; the view
``rejected_payloads`` shows both.

One INSERT per refused call, not batched with the receipts: refused calls are rare (the
caller authenticated), and a batch must not fail with the data that was just refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import asyncpg

from engine.queries import QUERIES
from engine.redact import Redactor

#: how much of a refused body is kept (characters)
EXCERPT = 2000
#: how much of the reason and of the URL's parameters is kept
REASON = 500
QUERY = 1000


def excerpt(body: bytes, redact: Redactor, limit: int = EXCERPT) -> str:
    """The start of ``body`` as text PostgreSQL holds, secrets masked before the cut."""
    text = body[: 16 * limit].decode(errors="replace")
    return _clean(redact.text(text))[:limit]


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


async def store_rejected(
    pool: asyncpg.Pool,
    account: str,
    reason: str,
    content_type: str,
    params: Mapping[str, str],
    body: bytes,
    redact: Redactor,
) -> None:
    """Store one refused call; raise the database's error if it cannot."""
    query = excerpt(urlencode(list(params.items())).encode(), redact, QUERY)
    async with pool.acquire() as conn:
        await conn.execute(
            QUERIES["insert_rejected_webhook"],
            account,
            _clean(redact.text(reason))[:REASON],
            _clean(content_type)[:200] or None,
            query or None,
            len(body),
            excerpt(body, redact),
        )
