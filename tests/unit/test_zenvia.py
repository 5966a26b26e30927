"""The Zenvia adapter against mocked HTTP: requests as the seed documents them, every error
in its table mapped, every webhook shape read."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from engine.errors import ProviderPermanentError, ProviderTemporaryError
from engine.providers import ACCOUNT_TYPES
from engine.providers.base import MalformedWebhook, Outbound, Outcome, SendResult
from engine.providers.zenvia import ZenviaAccount, ZenviaAdapter
from engine.status import MessageStatus
from tests.unit.adapter_case import (
    AdapterCase,
    MakeAdapter,
    MakeMessage,
    Sent,
    transport_failures,
)

BASE = "https://zenvia.test"
SEND = f"{BASE}/v2/channels/sms/messages"
SUBSCRIPTIONS = f"{BASE}/v2/subscriptions"
JSON = "application/json"


CASE = AdapterCase(
    "zenvia-br",
    ZenviaAccount,
    ZenviaAdapter,
    {
        "type": "zenvia",
        "token": "hKp94crjv9OF3UGrCpSXUJw1-UYHhRvLKNLt",
        "sender": "acme",
        "base_url": BASE,
        "webhook_secret": "s3cret",
    },
    to="+5511999999999",
)


# --- the account -----------------------------------------------------------------------------


def test_account_is_registered_with_its_defaults() -> None:
    assert ACCOUNT_TYPES["zenvia"] is ZenviaAccount
    made = ZenviaAccount.model_validate({"type": "zenvia", "token": "t", "sender": "acme"})
    assert made.url == "https://api.zenvia.com"
    assert made.channel == "sms"


@pytest.mark.parametrize(
    "bad",
    [{}, {"sender": ""}, {"sender": "acme", "channel": "pigeon"}],
    ids=["no-sender", "empty-sender", "unknown-channel"],
)
def test_account_requires_a_sender_and_a_known_channel(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ZenviaAccount.model_validate({"type": "zenvia", "token": "t", **bad})


# --- sending ---------------------------------------------------------------------------------


async def test_send_request_and_result(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(
        SEND,
        payload={
            "id": "0b5c6d3e-1111-4b2b-9c3d-1234567890ab",
            "externalId": "42",
            "from": "acme",
            "to": "5511999999999",
            "direction": "OUT",
            "channel": "sms",
            "contents": [{"type": "text", "text": "Hello"}],
            "timestamp": "2020-04-19T20:13:41.000Z",
        },
    )
    results = await adapter().send([message(42)])
    assert results == [SendResult(Outcome.ACCEPTED, "0b5c6d3e-1111-4b2b-9c3d-1234567890ab")]
    (call,) = sent("POST", SEND)
    assert orjson.loads(call.kwargs["data"]) == {
        "from": "acme",
        "to": "5511999999999",
        "contents": [{"type": "text", "text": "Hello"}],
        "externalId": "42",
    }
    headers = call.kwargs["headers"]
    assert headers["X-API-TOKEN"] == "hKp94crjv9OF3UGrCpSXUJw1-UYHhRvLKNLt"
    assert headers["Content-Type"] == JSON
    assert headers["Accept"] == JSON


async def test_channel_and_message_sender(http: Any, adapter: MakeAdapter, sent: Sent) -> None:
    url = f"{BASE}/v2/channels/whatsapp/messages"
    http.post(url, payload={"id": "w-1"})
    outbound = Outbound(7, "+5511988887777", "Oi", sender="5511900001111", channel="whatsapp")
    (result,) = await adapter(channel="whatsapp").send([outbound])
    assert result.provider_message_id == "w-1"
    body = orjson.loads(sent("POST", url)[0].kwargs["data"])
    assert (body["from"], body["to"]) == ("5511900001111", "5511988887777")


async def test_a_2xx_without_an_id_is_unknown(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, body=b"<html>ok</html>", status=200)
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "bad_response")


async def test_one_message_per_request(message: MakeMessage, adapter: MakeAdapter) -> None:
    zenvia = adapter()
    assert zenvia.max_batch == 1
    with pytest.raises(ValueError, match="exceeds"):
        await zenvia.send([message(1), message(2)])


@pytest.mark.parametrize(
    ("status", "payload", "code", "detail"),
    [
        (
            400,
            {
                "code": "VALIDATION_ERROR",
                "message": "Validation error",
                "details": [
                    {"code": "INVALID_FORMAT", "path": "to", "message": "must match pattern"}
                ],
            },
            "VALIDATION_ERROR",
            "Validation error; to: must match pattern",
        ),
        (
            401,
            {"code": "AUTHENTICATION_ERROR", "message": "No authorization token was found"},
            "AUTHENTICATION_ERROR",
            "No authorization token was found",
        ),
        (403, None, "403", ""),
        (404, {"code": "NOT_FOUND", "message": "Not found"}, "NOT_FOUND", "Not found"),
        (
            409,
            {"code": "DUPLICATED", "message": "Entity already exists"},
            "DUPLICATED",
            "Entity already exists",
        ),
    ],
    ids=["400", "401", "403", "404", "409"],
)
async def test_documented_errors_are_rejections(
    http: Any,
    status: int,
    payload: Any,
    code: str,
    detail: str,
    message: MakeMessage,
    adapter: MakeAdapter,
) -> None:
    http.post(SEND, status=status, payload=payload)
    (result,) = await adapter().send([message()])
    # 401/403 are the account's problem, not the message's (issue 17 item 1)
    outcome = Outcome.ACCOUNT if status in (401, 402, 403) else Outcome.REJECTED
    assert (result.outcome, result.error_code) == (outcome, code)
    if detail:
        assert result.error_detail == detail


async def test_500_is_retry_as_the_seed_documents(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=500, payload={"code": "INTERNAL_ERROR", "message": "Internal error"})
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "INTERNAL_ERROR")
    assert result.error_detail == "Internal error"


async def test_a_500_without_zenvias_body_is_unknown(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    """Only Zenvia's own INTERNAL_ERROR is documented as safe to resend; a proxy's 500 is
    not."""
    http.post(SEND, status=500, body=b"<html>Internal Server Error</html>")
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "500")


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_after_the_request_are_unknown(
    http: Any, status: int, message: MakeMessage, adapter: MakeAdapter
) -> None:
    """A send is not idempotent: a gateway error after the request was written may hide an
    accepted message, so it is never resent."""
    http.post(SEND, status=status, body=b"bad gateway")
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, str(status))


async def test_other_5xx_is_unknown(http: Any, message: MakeMessage, adapter: MakeAdapter) -> None:
    http.post(SEND, status=501, body=b"not implemented")
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.error_code) == (Outcome.UNKNOWN, "501")


async def test_429_is_retry_after_the_given_seconds(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=429, headers={"Retry-After": "7"})
    (result,) = await adapter().send([message()])
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 7)


@pytest.mark.parametrize(
    ("exception", "outcome"),
    transport_failures("zenvia.test"),
)
async def test_transport_failures(
    http: Any, exception: Exception, outcome: Outcome, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, exception=exception)
    (result,) = await adapter().send([message()])
    assert result.outcome is outcome


# --- webhooks: MESSAGE_STATUS ----------------------------------------------------------------


def status_event(code: str = "DELIVERED", **status: Any) -> dict[str, Any]:
    """A MESSAGE_STATUS event shaped as the Zenvia spec documents it."""
    return {
        "id": "evt-1",
        "timestamp": "2020-04-19T20:13:45.000Z",
        "subscriptionId": "sub-1",
        "type": "MESSAGE_STATUS",
        "channel": "sms",
        "messageId": "m-1",
        "contentIndex": 0,
        "message": {
            "id": "m-1",
            "externalId": "42",
            "contentIndex": 0,
            "direction": "OUT",
            "from": "acme",
            "to": "5511999999999",
        },
        "messageStatus": {
            "timestamp": "2020-04-19T20:13:44.000Z",
            "code": code,
            "description": code.lower(),
            "channel": "sms",
            "direction": "OUT",
            **status,
        },
    }


def parse(adapter: MakeAdapter, event: Any, **extra: Any) -> Any:
    return adapter(**extra).parse_webhook(JSON, orjson.dumps(event), {})


def test_message_status_is_a_receipt(adapter: MakeAdapter) -> None:
    events = parse(adapter, status_event(channelData={"sms": {"carrier": "VIVO_BR"}}))
    (receipt,) = events.receipts
    assert receipt.provider_message_id == "m-1"
    assert receipt.message_id == 42
    assert receipt.status is MessageStatus.DELIVERED
    assert receipt.provider_status == "DELIVERED"
    assert receipt.event_id == "evt-1"
    assert receipt.occurred_at == datetime(2020, 4, 19, 20, 13, 44, tzinfo=UTC)
    assert (receipt.error_code, receipt.error_detail) == (None, None)
    assert receipt.raw["subscriptionId"] == "sub-1"
    assert not events.inbound


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SENT", MessageStatus.SENT),
        ("DELIVERED", MessageStatus.DELIVERED),
        ("READ", MessageStatus.READ),
        ("NOT_DELIVERED", MessageStatus.UNDELIVERED),
        ("REJECTED", MessageStatus.UNDELIVERED),
        ("CLICKED", MessageStatus.READ),
        ("VERIFIED", MessageStatus.DELIVERED),
        ("TERMINATED", MessageStatus.DELIVERED),
        ("HANG_UP", MessageStatus.UNDELIVERED),
        ("DELETED", None),
        ("ACCEPTED", None),
    ],
)
def test_status_table(code: str, status: MessageStatus | None, adapter: MakeAdapter) -> None:
    assert parse(adapter, status_event(code)).receipts[0].status is status


def test_causes_become_the_error(adapter: MakeAdapter) -> None:
    event = status_event(
        "NOT_DELIVERED",
        causes=[
            {"channelErrorCode": "005", "reason": "ABSENT_SUBSCRIBER", "details": "Unreachable"}
        ],
    )
    (receipt,) = parse(adapter, event).receipts
    assert receipt.status is MessageStatus.UNDELIVERED
    assert (receipt.error_code, receipt.error_detail) == ("005", "Unreachable")


def test_the_older_singular_cause(adapter: MakeAdapter) -> None:
    (receipt,) = parse(adapter, status_event("NOT_DELIVERED", cause="EXPIRED")).receipts
    assert (receipt.error_code, receipt.error_detail) == ("EXPIRED", "not_delivered")


def test_a_failure_without_a_cause_is_its_own_code(adapter: MakeAdapter) -> None:
    (receipt,) = parse(adapter, status_event("REJECTED")).receipts
    assert (receipt.error_code, receipt.error_detail) == ("REJECTED", "rejected")


def test_unknown_status_is_kept_and_logged(
    caplog: pytest.LogCaptureFixture, adapter: MakeAdapter
) -> None:
    with caplog.at_level(logging.WARNING, "engine.providers.zenvia"):
        (receipt,) = parse(adapter, status_event("TELEPORTED")).receipts
    assert (receipt.status, receipt.provider_status) == (None, "TELEPORTED")
    assert "TELEPORTED" in caplog.text


def test_deprecated_message_id_and_foreign_external_id(adapter: MakeAdapter) -> None:
    event = status_event("SENT")
    event["message"] = {"externalId": "order-9"}
    (receipt,) = parse(adapter, event).receipts
    assert (receipt.provider_message_id, receipt.message_id) == ("m-1", None)


def test_event_timestamp_when_the_status_has_none(adapter: MakeAdapter) -> None:
    event = status_event("SENT")
    del event["messageStatus"]["timestamp"]
    (receipt,) = parse(adapter, event).receipts
    assert receipt.occurred_at == datetime(2020, 4, 19, 20, 13, 45, tzinfo=UTC)


# --- webhooks: MESSAGE -----------------------------------------------------------------------


def message_event(text: str, channel: str = "sms", direction: str = "IN") -> dict[str, Any]:
    return {
        "id": "evt-9",
        "timestamp": "2020-04-19T20:20:00.000Z",
        "type": "MESSAGE",
        "subscriptionId": "sub-2",
        "channel": channel,
        "direction": direction,
        "message": {
            "id": "in-1",
            "from": "5511999999999",
            "to": "acme",
            "direction": direction,
            "channel": channel,
            "contents": [{"type": "text", "text": text}],
            "timestamp": "2020-04-19T20:20:00.000Z",
        },
    }


def test_inbound_message_is_a_reply(adapter: MakeAdapter) -> None:
    events = parse(adapter, message_event("Thanks!"))
    (reply,) = events.inbound
    assert (reply.from_, reply.text, reply.provider_message_id) == (
        "+5511999999999",
        "Thanks!",
        "in-1",
    )
    assert reply.raw["id"] == "evt-9"
    assert not events.receipts
    assert not events.opt_changes


@pytest.mark.parametrize(
    ("text", "channel", "opted_out"),
    [("STOP", "sms", True), ("start", "sms", False), ("Stop", "whatsapp", True)],
)
def test_keywords_are_opt_changes(
    text: str, channel: str, opted_out: bool, adapter: MakeAdapter
) -> None:
    (change,) = parse(adapter, message_event(text, channel)).opt_changes
    assert (change.phone, change.opted_out, change.channel) == (
        "+5511999999999",
        opted_out,
        channel,
    )


def test_facebook_ids_are_not_phone_numbers(adapter: MakeAdapter) -> None:
    events = parse(adapter, message_event("STOP", "facebook"))
    assert events.inbound[0].from_ == "5511999999999"
    assert not events.opt_changes


def test_outbound_echoes_and_other_event_types_carry_nothing(adapter: MakeAdapter) -> None:
    assert parse(adapter, message_event("hi", direction="OUT")) == parse(
        adapter, {"id": "e", "type": "CONVERSATION_STATUS"}
    )
    assert parse(adapter, {"id": "e", "type": "CONTACT"}).receipts == ()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (JSON, b"{not json", "JSON"),
        (JSON, b"[]", "with a type"),
        (JSON, b'{"id": "e"}', "with a type"),
        (JSON, b"", "with a type"),
        (JSON, b'{"type": "MESSAGE_STATUS", "message": {"id": "m"}}', "messageStatus.code"),
        (JSON, b'{"type": "MESSAGE_STATUS", "messageStatus": {"code": "SENT"}}', "message.id"),
        (JSON, b'{"type": "MESSAGE", "message": "hi"}', "without a message"),
        (JSON, b'{"type": "MESSAGE", "message": {"contents": []}}', "message.from"),
        ("text/xml", b"<event/>", "content type"),
    ],
)
def test_malformed_webhooks(
    content_type: str, body: bytes, reason: str, adapter: MakeAdapter
) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter().parse_webhook(content_type, body, {})


def test_webhook_secret_in_the_header(adapter: MakeAdapter) -> None:
    zenvia = adapter()
    assert zenvia.webhook_authentic({"X-Webhook-Secret": "s3cret"}, {})
    assert zenvia.webhook_authentic({"x-webhook-secret": "s3cret"}, {})
    assert not zenvia.webhook_authentic({"X-Webhook-Secret": "wrong"}, {})
    assert not zenvia.webhook_authentic({}, {})
    assert not zenvia.webhook_authentic({}, {"X-Webhook-Secret": "s3cret"})
    assert zenvia.webhook_url("https://engine.example.com/") == (
        "https://engine.example.com/webhooks/zenvia-br"
    )


# --- subscriptions ---------------------------------------------------------------------------


async def test_subscribe_creates_status_and_message_subscriptions(
    http: Any, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SUBSCRIPTIONS, payload={"id": "sub-status", "eventType": "MESSAGE_STATUS"})
    http.post(SUBSCRIPTIONS, payload={"id": "sub-message", "eventType": "MESSAGE"})
    made = await adapter().subscribe("https://engine.example.com")
    assert made == {
        "MESSAGE_STATUS": {"id": "sub-status", "eventType": "MESSAGE_STATUS"},
        "MESSAGE": {"id": "sub-message", "eventType": "MESSAGE"},
    }
    webhook = {
        "url": "https://engine.example.com/webhooks/zenvia-br",
        "headers": {"X-Webhook-Secret": "s3cret"},
    }
    calls = sent("POST", SUBSCRIPTIONS)
    assert [orjson.loads(c.kwargs["data"]) for c in calls] == [
        {
            "eventType": "MESSAGE_STATUS",
            "webhook": webhook,
            "criteria": {"channel": "sms"},
            "status": "ACTIVE",
            "version": "v2",
        },
        {
            "eventType": "MESSAGE",
            "webhook": webhook,
            "criteria": {"channel": "sms", "direction": "IN"},
            "status": "ACTIVE",
            "version": "v2",
        },
    ]
    assert calls[0].kwargs["headers"]["X-API-TOKEN"] == "hKp94crjv9OF3UGrCpSXUJw1-UYHhRvLKNLt"


async def test_subscribe_without_a_secret_sends_no_header(
    http: Any, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SUBSCRIPTIONS, payload={"id": "a"}, repeat=True)
    await adapter(webhook_secret=None, channel="whatsapp").subscribe("https://e.test")
    body = orjson.loads(sent("POST", SUBSCRIPTIONS)[0].kwargs["data"])
    assert body["webhook"] == {"url": "https://e.test/webhooks/zenvia-br"}
    assert body["criteria"] == {"channel": "whatsapp"}


async def test_subscribe_errors(http: Any, adapter: MakeAdapter) -> None:
    http.post(
        SUBSCRIPTIONS,
        status=409,
        payload={"code": "DUPLICATED", "message": "Entity already exists"},
    )
    with pytest.raises(ProviderPermanentError, match="DUPLICATED: Entity already exists"):
        await adapter().subscribe("https://e.test")
    http.post(SUBSCRIPTIONS, status=500, payload={"code": "INTERNAL_ERROR"})
    with pytest.raises(ProviderTemporaryError, match="MESSAGE_STATUS subscription"):
        await adapter().subscribe("https://e.test")


# --- the seed's own examples, verbatim -------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zenvia"


def seed_error_table() -> list[tuple[int, str, str, bool]]:
    """The rows of the seed's "Error Handling" table: (status, code, message, retry)."""
    rows = []
    for line in (FIXTURES / "error_table.md").read_text().splitlines()[2:]:
        status, code, text, retry = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((int(status), code, text, retry == "Yes"))
    return rows


@pytest.mark.parametrize(
    ("status", "code", "text", "retry"),
    seed_error_table(),
    ids=[row[1] for row in seed_error_table()],
)
async def test_every_row_of_the_seeds_error_table(
    http: Any,
    status: int,
    code: str,
    text: str,
    retry: bool,
    message: MakeMessage,
    adapter: MakeAdapter,
) -> None:
    """Retry exactly what the seed marks "Retry request: Yes"; refuse the rest for good."""
    http.post(SEND, status=status, payload={"code": code, "message": text})
    (result,) = await adapter().send([message()])
    refused = Outcome.ACCOUNT if status == 401 else Outcome.REJECTED  # the account's 401
    assert result.outcome is (Outcome.RETRY if retry else refused)
    assert (result.error_code, result.error_detail) == (code, text)


def test_the_seeds_error_table_is_complete() -> None:
    assert [row[0] for row in seed_error_table()] == [400, 401, 404, 409, 500]


async def test_the_token_travels_as_the_seeds_example_shows(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    name, _, token = (FIXTURES / "token_header.txt").read_text().strip().partition(": ")
    http.post(SEND, payload={"id": "m-1"})
    await adapter(token=token).send([message()])
    (call,) = sent("POST", SEND)
    assert call.kwargs["headers"][name] == token


@pytest.mark.parametrize(
    "base_url",
    [
        "https://zenvia.test",
        "https://zenvia.test/",
        "https://zenvia.test/v2",
        "https://zenvia.test/v2/",
    ],
)
async def test_base_url_with_or_without_v2(
    http: Any, base_url: str, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, payload={"id": "m-1"})
    (result,) = await adapter(base_url=base_url).send([message()])
    assert result.provider_message_id == "m-1"
    assert len(sent("POST", SEND)) == 1


@pytest.mark.parametrize(
    ("code", "cause", "error_code"),
    [
        ("NOT_DELIVERED", {"causes": [{"channelErrorCode": "005", "reason": "ABSENT"}]}, "005"),
        ("NOT_DELIVERED", {"cause": "EXPIRED"}, "EXPIRED"),
        ("REJECTED", {}, "REJECTED"),
        ("HANG_UP", {}, "HANG_UP"),
    ],
    ids=["not-delivered-causes", "not-delivered-cause", "rejected", "hang-up"],
)
def test_every_failure_after_acceptance_is_undelivered_with_its_code(
    code: str, cause: dict[str, Any], error_code: str, adapter: MakeAdapter
) -> None:
    (receipt,) = parse(adapter, status_event(code, **cause)).receipts
    assert (receipt.status, receipt.error_code) == (MessageStatus.UNDELIVERED, error_code)
