"""Secrets masked in payloads and log records, however they are written."""

from __future__ import annotations

import logging

import orjson
import pytest

from engine.providers import CourierAccount
from engine.redact import MASK, Redactor

SECRET = 'cour/se"cret+0011'


def test_payloads_are_masked_as_written_url_encoded_and_in_keys() -> None:
    redact = Redactor([SECRET])
    raw = {
        "callback-status-url": "https://e.example/webhooks/c?secret=cour%2Fse%22cret%2B0011",
        "yarl": "secret=cour/se%22cret%2B0011&a=%41",
        "as-is": [f"x{SECRET}y"],
        SECRET: 1,
    }
    stored = redact.json(raw)
    assert "0011" not in stored
    assert orjson.loads(stored) == {
        "callback-status-url": f"https://e.example/webhooks/c?secret={MASK}",
        "yarl": f"secret={MASK}&a=A",
        "as-is": [f"x{MASK}y"],
        MASK: 1,
    }


def test_every_secret_of_an_account_is_known() -> None:
    account = CourierAccount(
        type="courier",
        token="api-token-0123",
        account_id="a",
        number_id="n",
        webhook_secret="webhook-secret-0123",
    )
    redact = Redactor.of([account])
    assert redact.text("api-token-0123 webhook-secret-0123") == f"{MASK} {MASK}"


def test_short_secrets_are_left_alone_and_big_integers_stored_as_text() -> None:
    redact = Redactor(["s3cret"])
    assert not redact
    assert orjson.loads(redact.json({"s": "s3cret", "n": 2**70})) == {
        "s": "s3cret",
        "n": str(2**70),
    }


def test_too_deep_to_store_raises_type_error() -> None:
    value: object = "x"
    for _ in range(300):
        value = [value]
    with pytest.raises(TypeError):
        Redactor([SECRET]).json({"deep": value})


def test_log_records_are_masked_in_message_and_traceback() -> None:
    redact = Redactor([SECRET])
    try:
        raise ValueError(f"bad url ?secret={SECRET}")
    except ValueError as exc:
        record = logging.LogRecord(
            "t",
            logging.WARNING,
            __file__,
            1,
            "refused: %s %r",
            (exc, {"k": SECRET}),
            (type(exc), exc, exc.__traceback__),
        )
    assert redact.filter(record)
    text = logging.Formatter().format(record)
    assert SECRET not in text and MASK in text
    assert "ValueError" in text
