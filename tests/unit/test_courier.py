"""The courier adapter against mocked HTTP: the JSON:API texts request as the seed documents
it, its errors mapped, its status callbacks read."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from yarl import URL

from engine.providers import ACCOUNT_TYPES
from engine.providers.base import MalformedWebhook, Outcome, SendResult
from engine.providers.courier import CourierAccount, CourierAdapter, _created
from engine.status import MessageStatus
from tests.unit.adapter_case import (
    AdapterCase,
    MakeAdapter,
    MakeMessage,
    Sent,
    transport_failures,
)

BASE = "https://carium.test/courier"
TEXTS = f"{BASE}/v1/texts/"
JSON = "application/json"
ACCOUNT_ID = "11111111-1111-1111-1111-111111111111"
NUMBER_ID = "22222222-2222-2222-2222-222222222222"
ORG_ID = "33333333-3333-3333-3333-333333333333"
TEXT_ID = "44444444-4444-4444-4444-444444444444"
PUBLIC = "https://engine.example.com"


CASE = AdapterCase(
    "courier-us",
    CourierAccount,
    CourierAdapter,
    {
        "type": "courier",
        "token": "jwt-abc",
        "account_id": ACCOUNT_ID,
        "number_id": NUMBER_ID,
        "base_url": BASE,
        "webhook_secret": "s3cret",
    },
    to="+14155550100",
    public_url=PUBLIC,
)


def created(status: str = "accepted", **attributes: Any) -> dict[str, Any]:
    """The seed's 201 response sample, filled in."""
    return {
        "data": {
            "attributes": {
                "callback-status-url": "https://engine.example.com/webhooks/courier-us?secret=s3cret",
                "callback-url": None,
                "created-at": "2024-05-01T10:00:00Z",
                "created-by": ACCOUNT_ID,
                "error": None,
                "from": "+14155550199",
                "last-modified-at": "2024-05-01T10:00:00Z",
                "message": "Hello",
                "status": status,
                "target": "+14155550100",
                "twilio-sid": None,
                **attributes,
            },
            "id": TEXT_ID,
            "type": "texts",
        },
        "meta": {},
    }


# --- the account -----------------------------------------------------------------------------


def test_account_is_registered_with_its_defaults() -> None:
    assert ACCOUNT_TYPES["courier"] is CourierAccount
    made = CourierAccount.model_validate(
        {"type": "courier", "token": "t", "account_id": "a", "number_id": "n"}
    )
    assert made.url == "https://api.carium.com/courier"
    assert made.organization_id is None


# --- sending ---------------------------------------------------------------------------------


async def test_send_request_and_result(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(TEXTS, status=201, payload=created())
    results = await adapter().send([message(42)])
    assert results == [SendResult(Outcome.ACCEPTED, TEXT_ID)]
    (call,) = sent("POST", TEXTS)
    assert orjson.loads(call.kwargs["data"]) == {
        "data": {
            "type": "texts",
            "attributes": {
                "account-id": ACCOUNT_ID,
                "number-id": NUMBER_ID,
                "target": "+14155550100",
                "message": "Hello",
                "callback-status-url": "https://engine.example.com/webhooks/courier-us/s3cret?message_id=42",
                "callback-json": {"message_id": 42},
                "callback-url": "https://engine.example.com/webhooks/courier-us/s3cret"
                "?message_id=42&event=reply",
                "expected-responses": [
                    "CANCEL",
                    "END",
                    "OPTIN",
                    "QUIT",
                    "START",
                    "STOP",
                    "STOPALL",
                    "UNSTOP",
                    "UNSUBSCRIBE",
                ],
                "callback-one-off": False,
            },
        },
        "meta": {},
    }
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == "Bearer jwt-abc"
    assert headers["Content-Type"] == JSON


async def test_organization_id_travels_when_configured(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(TEXTS, status=201, payload=created())
    await adapter(organization_id=ORG_ID).send([message()])
    attributes = orjson.loads(sent("POST", TEXTS)[0].kwargs["data"])["data"]["attributes"]
    assert attributes["organization-id"] == ORG_ID


async def test_without_a_public_url_no_callback_is_asked_for(
    http: Any,
    caplog: pytest.LogCaptureFixture,
    message: MakeMessage,
    adapter: MakeAdapter,
    sent: Sent,
) -> None:
    http.post(TEXTS, status=201, payload=created(), repeat=True)
    courier = adapter(public_url=None)
    with caplog.at_level(logging.WARNING, "engine.providers.courier"):
        await courier.send([message(1)])
        await courier.send([message(2)])
    attributes = orjson.loads(sent("POST", TEXTS)[0].kwargs["data"])["data"]["attributes"]
    assert "callback-status-url" not in attributes
    assert "callback-json" not in attributes
    assert "callback-url" not in attributes
    assert caplog.text.count("public_url") == 1  # warned once, not per message


async def test_without_a_secret_the_callback_url_has_none(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(TEXTS, status=201, payload=created())
    await adapter(webhook_secret=None).send([message()])
    attributes = orjson.loads(sent("POST", TEXTS)[0].kwargs["data"])["data"]["attributes"]
    assert attributes["callback-status-url"] == (
        "https://engine.example.com/webhooks/courier-us?message_id=1"
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"data": {"type": "texts", "attributes": {"status": "accepted"}}}, "bad_response"),
        ({"errors": []}, "bad_response"),
    ],
)
async def test_a_2xx_without_an_id_is_unknown(
    http: Any, payload: Any, code: str, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(TEXTS, status=201, payload=payload)
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, code)


async def test_a_201_that_already_failed_is_a_rejection(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(TEXTS, status=201, payload=created("failed", error="Unsubscribed recipient"))
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code, result.error_detail) == (
        Outcome.REJECTED,
        "failed",
        "Unsubscribed recipient",
    )


async def test_one_message_per_request(message: MakeMessage, adapter: MakeAdapter) -> None:
    courier = adapter()
    assert courier.max_batch == 1
    with pytest.raises(ValueError, match="exceeds"):
        await courier.send([message(1), message(2)])


def jsonapi_error(status: int, code: str, detail: str) -> dict[str, Any]:
    """The seed's 4XX sample."""
    return {
        "errors": [
            {
                "code": code,
                "detail": detail,
                "meta": {},
                "source": {"parameter": "", "pointer": "/data/attributes/target"},
                "status": status,
            }
        ]
    }


@pytest.mark.parametrize(
    ("status", "payload", "code", "detail"),
    [
        (
            400,
            jsonapi_error(400, "ValidationError", "target: not a phone number"),
            "ValidationError",
            "target: not a phone number",
        ),
        (
            400,
            {
                "errors": [
                    {"status": 400, "code": "A", "detail": "one"},
                    {"status": 400, "title": "two"},
                ]
            },
            "A",
            "one; two",
        ),
        (401, jsonapi_error(401, "Unauthorized", "token expired"), "Unauthorized", "token expired"),
        (
            403,
            jsonapi_error(403, "Forbidden", "no access to account"),
            "Forbidden",
            "no access to account",
        ),
        (404, None, "404", ""),
        (
            409,
            {"errors": [{"code": "DuplicateChannel", "meta": {"id": "x"}}]},
            "DuplicateChannel",
            "",
        ),
    ],
    ids=["400", "400-many", "401", "403", "404-bare", "409"],
)
async def test_errors_are_rejections(
    http: Any,
    status: int,
    payload: Any,
    code: str,
    detail: str,
    message: MakeMessage,
    adapter: MakeAdapter,
) -> None:
    http.post(TEXTS, status=status, payload=payload)
    (result,) = await adapter().send([message()])
    # 401/403 are the account's problem, not the message's (issue 17 item 1)
    outcome = Outcome.ACCOUNT if status in (401, 402, 403) else Outcome.REJECTED
    assert (result.outcome, result.error_code) == (outcome, code)
    if detail:
        assert result.error_detail == detail


async def test_429_is_retry_after_the_given_seconds(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(
        TEXTS,
        status=429,
        headers={"Retry-After": "12"},
        payload=jsonapi_error(429, "TooManyRequests", "slow down"),
    )
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 12)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unknown(
    http: Any, status: int, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(TEXTS, status=status, body=b"oops")
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, str(status))


@pytest.mark.parametrize(
    ("exception", "outcome"),
    transport_failures("carium.test"),
)
async def test_transport_failures(
    http: Any, exception: Exception, outcome: Outcome, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(TEXTS, exception=exception)
    (result,) = await adapter().send([message()])
    assert result.outcome is outcome


# --- status callbacks ------------------------------------------------------------------------


def callback(status: str = "delivered", **attributes: Any) -> dict[str, Any]:
    """A texts document as courier posts it to callback-status-url [G]."""
    doc = created(status, **attributes)
    doc["data"]["attributes"]["callback-json"] = {"message_id": 42}
    return doc


def parse(adapter: MakeAdapter, body: Any, query: dict[str, str] | None = None) -> Any:
    return adapter().parse_webhook(JSON, orjson.dumps(body), query or {})


def test_status_callback_is_a_receipt(adapter: MakeAdapter) -> None:
    body = callback(**{"last-modified-at": "2024-05-01T10:00:05Z"})
    events = parse(adapter, body, {"secret": "s3cret"})
    (receipt,) = events.receipts
    assert receipt.provider_message_id == TEXT_ID
    assert receipt.message_id == 42
    assert receipt.status is MessageStatus.DELIVERED
    assert receipt.provider_status == "delivered"
    assert (receipt.error_code, receipt.error_detail) == (None, None)
    assert receipt.occurred_at == datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    assert receipt.event_id is None
    assert receipt.raw["data"]["id"] == body["data"]["id"]
    assert receipt.raw["data"]["attributes"]["callback-status-url"] == (
        "https://engine.example.com/webhooks/courier-us?secret=[secret]"
    )  # echoed, scrubbed
    assert "s3cret" not in orjson.dumps(receipt.raw).decode()
    assert not events.inbound


def test_failure_carries_its_error(adapter: MakeAdapter) -> None:
    (receipt,) = parse(adapter, callback("undelivered", error="Unreachable handset")).receipts
    assert (receipt.error_code, receipt.error_detail) == ("undelivered", "Unreachable handset")
    body = callback("failed", error="Carrier violation", **{"error-code": "30007"})
    (receipt,) = parse(adapter, body).receipts
    assert (receipt.error_code, receipt.error_detail) == ("30007", "Carrier violation")


def test_unknown_status_is_kept_and_logged(
    caplog: pytest.LogCaptureFixture, adapter: MakeAdapter
) -> None:
    with caplog.at_level(logging.WARNING, "engine.providers.courier"):
        (receipt,) = parse(adapter, callback("canceled")).receipts
    assert (receipt.status, receipt.provider_status) == (None, "canceled")
    assert "canceled" in caplog.text


@pytest.mark.parametrize(
    "where",
    ["attributes-string", "top-level", "meta", "merged", "absent"],
)
def test_our_id_wherever_callback_json_is_echoed(where: str, adapter: MakeAdapter) -> None:
    body = created("sent")
    attributes = body["data"]["attributes"]
    if where == "attributes-string":
        attributes["callback-json"] = '{"message_id": "42"}'
    elif where == "top-level":
        body["callback-json"] = {"message_id": 42}
    elif where == "meta":
        body["meta"] = {"message_id": 42}
    elif where == "merged":
        body["message_id"] = "42"
    (receipt,) = parse(adapter, body).receipts
    assert receipt.message_id == (None if where == "absent" else 42)
    assert receipt.provider_message_id == TEXT_ID


def test_our_id_alone_is_enough(adapter: MakeAdapter) -> None:
    body = {
        "data": {
            "type": "texts",
            "attributes": {"status": "sent", "callback-json": {"message_id": 7}},
        }
    }
    (receipt,) = parse(adapter, body).receipts
    assert (receipt.provider_message_id, receipt.message_id) == (None, 7)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "JSON"),
        (b"[]", "JSON:API document"),
        (b'{"errors": []}', "neither a texts document nor Twilio"),
        (
            b'{"data": {"type": "multicasts", "id": "x", "attributes": {"status": "sent"}}}',
            "neither attributes.status nor a reply",
        ),
        (b'{"data": {"type": "texts", "id": "x"}}', "without data.attributes"),
        (
            b'{"data": {"type": "texts", "id": "x", "attributes": {"status": 3}}}',
            "neither attributes.status nor a reply",
        ),
        (b'{"data": {"type": "texts", "attributes": {"status": "sent"}}}', "without an id"),
        (
            b'{"data": {"type": "texts", "attributes": {"status": "received", "from": "+1"}}}',
            "without an id",
        ),
    ],
)
def test_malformed_callbacks(body: bytes, reason: str, adapter: MakeAdapter) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter().parse_webhook(JSON, body, {})


def test_webhook_secret_in_the_query(adapter: MakeAdapter) -> None:
    courier = adapter()
    assert courier.webhook_authentic({}, {"secret": "s3cret"})
    assert not courier.webhook_authentic({}, {"secret": "wrong"})
    assert not courier.webhook_authentic({}, {})
    assert not courier.webhook_authentic({"X-Webhook-Secret": "s3cret"}, {})
    # the older ?secret= form is still read; the URL the engine gives out is the path form
    assert courier.webhook_url(PUBLIC) == f"{PUBLIC}/webhooks/courier-us/s3cret"


# --- issue 17: the seed's examples, the vocabulary, both callback shapes, replies, polling --------

FIXTURES = Path(__file__).parents[1] / "fixtures" / "courier"
FORM = "application/x-www-form-urlencoded"


def seed(name: str) -> Any:
    """A sample exactly as the seed prints it (ReDoc's ``- `` list marks) read as JSON."""
    text = (FIXTURES / name).read_text()
    return orjson.loads(re.sub(r"(^|[\[{,]\s*)- ", r"\1", text, flags=re.M))


async def test_our_request_has_the_seed_samples_shape(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    sample = seed("create_text_request.txt")
    http.post(TEXTS, status=201, payload=seed("create_text_response.txt"))
    (result,) = await adapter(organization_id=ORG_ID).send([message(42)])
    assert result == SendResult(Outcome.ACCEPTED, "11111111-1111-1111-1111-111111111111")
    ours = orjson.loads(sent("POST", TEXTS)[0].kwargs["data"])
    assert set(ours) == set(sample)
    assert set(ours["data"]) == set(sample["data"])
    assert set(ours["data"]["attributes"]) == set(sample["data"]["attributes"])
    for name, value in sample["data"]["attributes"].items():
        assert type(ours["data"]["attributes"][name]) is type(value), name


async def test_the_seed_error_sample_is_a_rejection(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(TEXTS, status=400, payload=seed("error_response.txt"))
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code, result.error_detail) == (
        Outcome.REJECTED,
        "string",
        "string",
    )


@pytest.mark.parametrize(
    ("word", "status", "code"),
    [
        ("accepted", MessageStatus.SENT, None),
        ("scheduled", MessageStatus.SENT, None),
        ("queued", MessageStatus.SENT, None),
        ("sending", MessageStatus.SENT, None),
        ("sent", MessageStatus.SENT, None),
        ("delivered", MessageStatus.DELIVERED, None),
        ("Delivered", MessageStatus.DELIVERED, None),
        ("read", MessageStatus.READ, None),
        ("undelivered", MessageStatus.UNDELIVERED, "undelivered"),
        ("failed", MessageStatus.UNDELIVERED, "failed"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
@pytest.mark.parametrize("shape", ["texts", "twilio"])
def test_failure_vocabulary(
    shape: str, word: str, status: MessageStatus, code: str | None, adapter: MakeAdapter
) -> None:
    """After acceptance nothing is ``failed``: a failure is ``undelivered``, code kept."""
    if shape == "texts":
        events = parse(adapter, callback(word))
    else:
        body = urlencode({"MessageSid": "SM1", "MessageStatus": word}).encode()
        events = adapter().parse_webhook(FORM, body, {"message_id": "42"})
    (receipt,) = events.receipts
    assert (receipt.status, receipt.error_code, receipt.message_id) == (status, code, 42)


def test_a_201_failure_is_still_refused_at_send() -> None:
    refused = _created(created("failed", error="Blocked"))
    assert (refused.outcome, refused.error_code) == (Outcome.REJECTED, "failed")


@pytest.mark.parametrize("echo", [True, False])
def test_twilio_style_status_fields(echo: bool, adapter: MakeAdapter) -> None:
    fields = {
        "MessageSid": "SMabc",
        "SmsSid": "SMabc",
        "AccountSid": "AC1",
        "MessageStatus": "undelivered",
        "SmsStatus": "undelivered",
        "ErrorCode": "30003",
        "ErrorMessage": "Unreachable destination handset",
        "From": "+15550100000",
        "To": "+14155550100",
    }
    query = {"secret": "s3cret", "message_id": "42"}
    if echo:
        fields["callback-json"] = '{"message_id": 42}'
        del query["message_id"]
    body = urlencode(fields).encode()
    (receipt,) = adapter().parse_webhook(FORM, body, query).receipts
    assert (receipt.provider_message_id, receipt.message_id) == ("SMabc", 42)
    assert (receipt.status, receipt.error_code, receipt.error_detail) == (
        MessageStatus.UNDELIVERED,
        "30003",
        "Unreachable destination handset",
    )
    assert "s3cret" not in orjson.dumps(receipt.raw).decode()


def test_the_callback_urls_message_id_wins(adapter: MakeAdapter) -> None:
    body = created("delivered")  # no callback-json at all
    (receipt,) = parse(adapter, body, {"secret": "s3cret", "message_id": "9"}).receipts
    assert (receipt.provider_message_id, receipt.message_id) == (TEXT_ID, 9)
    assert receipt.raw["message_id"] == "9" and "secret" not in receipt.raw


@pytest.mark.parametrize("shape", ["text-receive-logs", "twilio"])
@pytest.mark.parametrize(
    ("text", "opted_out"), [("STOP", True), ("start", False), ("thanks", None)]
)
def test_replies_in_either_shape(
    shape: str, text: str, opted_out: bool | None, adapter: MakeAdapter
) -> None:
    query = {"secret": "s3cret", "message_id": "42", "event": "reply"}
    if shape == "twilio":
        body = urlencode(
            {"MessageSid": "SMr", "From": "+14155550100", "To": "+15550100000", "Body": text}
        ).encode()
        events = adapter().parse_webhook(FORM, body, query)
    else:
        doc = {
            "data": {
                "id": "r-1",
                "type": "text-receive-logs",
                "attributes": {
                    "created-at": "2024-05-01T10:00:00Z",
                    "message": text,
                    "sender": "+14155550100",
                    "sid": "SMr",
                    "to": "+15550100000",
                },
            },
            "meta": {},
        }
        events = parse(adapter, doc, query)
    (reply,) = events.inbound
    assert (reply.from_, reply.text, reply.provider_message_id) == ("+14155550100", text, "SMr")
    assert not events.receipts
    assert "secret" not in reply.raw
    assert [o.opted_out for o in events.opt_changes] == ([] if opted_out is None else [opted_out])


async def test_poll_one_text_with_the_seed_response(http: Any, adapter: MakeAdapter) -> None:
    text_id = "11111111-1111-1111-1111-111111111111"
    http.get(f"{TEXTS}{text_id}/", payload=seed("get_text_response.txt"))
    http.get(f"{TEXTS}missing/", status=404, payload=seed("error_response.txt"))
    courier = adapter()
    assert courier.supports_polling
    (receipt,) = await courier.poll([text_id, "missing"])
    assert (receipt.provider_message_id, receipt.status) == (text_id, MessageStatus.SENT)


async def test_poll_several_texts_to_one_number_with_one_list(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    for text_id in ("t1", "t2"):
        http.post(
            TEXTS,
            status=201,
            payload={
                "data": {"id": text_id, "type": "texts", "attributes": {"status": "accepted"}}
            },
        )
    courier = adapter()
    await courier.send([message(1)])
    await courier.send([message(2)])
    listed = seed("list_texts_response.txt")
    first = listed["data"][0]
    listed["data"] = [
        {**first, "id": "t1", "attributes": {**first["attributes"], "status": "delivered"}},
        {**first, "id": "t2", "attributes": {**first["attributes"], "status": "failed"}},
    ]
    query = {"account-id": ACCOUNT_ID, "filter[target]": "+14155550100", "page[limit]": "1000"}
    http.get(URL(TEXTS).with_query(query), payload=listed)
    receipts = await courier.poll(["t1", "t2"])
    assert {(r.provider_message_id, r.status) for r in receipts} == {
        ("t1", MessageStatus.DELIVERED),
        ("t2", MessageStatus.UNDELIVERED),
    }
    assert len(http.requests[("GET", URL(TEXTS).with_query(query))]) == 1
