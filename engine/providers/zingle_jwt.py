"""Zingle's JWTs, as the adapter renews them: reading the JWT API's answer, and when to renew.

Pure (no I/O): the adapter (engine.providers.zingle) makes the calls. Zingle's dates are
read here too, as the JWT API's ``expires_at`` is one.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

#: where the JWT API's answer may keep the token [G]
TOKEN_KEYS = ("jwt", "token", "access_token")


def zingle_date(value: Any) -> datetime | None:
    """A Zingle date: Unix seconds (the v1 docs) or any ISO-8601 text (the seed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def token_from(data: Any, lifetime: timedelta) -> tuple[str, float] | None:
    """The JWT API's answer as (JWT, when to renew it) [G: the shape is not documented]."""
    holder = data.get("result") if isinstance(data, dict) else None
    for place in (holder, data):
        if not isinstance(place, dict):
            continue
        token = next(
            (place[k] for k in TOKEN_KEYS if isinstance(place.get(k), str) and place[k]), None
        )
        if token is None:
            continue
        expires = zingle_date(place.get("expires_at"))
        seconds = place.get("expires_in")
        if expires is None and isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return token, _renew_time(time.time() + seconds)
        if expires is not None:
            return token, _renew_time(expires.timestamp())
        return token, renew_at(token, lifetime)
    return None


def renew_at(jwt: str, lifetime: timedelta) -> float:
    """When to renew a JWT: by its ``exp`` claim, else ``lifetime`` from now."""
    expires = jwt_expiry(jwt)
    return _renew_time(expires if expires is not None else time.time() + lifetime.total_seconds())


def _renew_time(expires: float) -> float:
    """Renew once 80% of the remaining lifetime has passed."""
    now = time.time()
    return now + max(0.0, expires - now) * 0.8


def jwt_expiry(jwt: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: only to know when to renew it)."""
    parts = jwt.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
