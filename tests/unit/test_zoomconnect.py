"""The ZoomConnect adapter against mocked HTTP: requests as documented, every error mapped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
import pytest
from yarl import URL

from engine.providers.base import MalformedWebhook, Outcome, SendResult
from engine.providers.zoomconnect import ZoomConnectAccount, ZoomConnectAdapter
from engine.status import MessageStatus
from tests.unit.adapter_case import (
    AdapterCase,
    MakeAdapter,
    MakeMessage,
    Sent,
    transport_failures,
)

BASE = "https://zc.test/app"
SEND = f"{BASE}/api/rest/v1/sms/send"
BULK = f"{BASE}/api/rest/v1/sms/send-bulk"


CASE = AdapterCase(
    "zc-main",
    ZoomConnectAccount,
    ZoomConnectAdapter,
    {
        "type": "zoomconnect",
        "email": "ops@example.com",
        "token": "tok-123",
        "base_url": BASE,
        "webhook_secret": "s3cret",
    },
    to="+27821234567",
)


# --- sending ---------------------------------------------------------------------------------


async def test_single_send_request_and_result(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, payload={"messageId": "zc-1", "error": None})
    results = await adapter().send([message(42)])
    assert results == [SendResult(Outcome.ACCEPTED, "zc-1")]
    (call,) = sent("POST", SEND)
    assert orjson.loads(call.kwargs["data"]) == {
        "recipientNumber": "+27821234567",
        "message": "Hello",
        "dataField": "42",
    }
    headers = call.kwargs["headers"]
    assert headers["email"] == "ops@example.com"
    assert headers["token"] == "tok-123"
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"


async def test_campaign_label_travels_when_configured(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(SEND, payload={"messageId": "zc-1"})
    await adapter(campaign="spring").send([message()])
    assert orjson.loads(sent("POST", SEND)[0].kwargs["data"])["campaign"] == "spring"


async def test_error_in_a_200_is_a_rejection(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, payload={"messageId": None, "error": "Insufficient credits"})
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.REJECTED
    assert result.error_detail == "Insufficient credits"


async def test_unreadable_200_is_unknown(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, body=b"<html>ok</html>", status=200)
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.UNKNOWN


async def test_bulk_request_and_positional_results(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(
        BULK,
        payload={
            "sendSmsResponses": [
                {"messageId": "a", "error": None},
                {"messageId": None, "error": "Invalid mobile number"},
                {"messageId": "c", "error": None},
            ]
        },
    )
    zc = adapter(bulk=True, batch_size=3)
    assert zc.max_batch == 3
    batch = [message(1, "+27820000001"), message(2, "+2782"), message(3, "+27820000003")]
    results = await zc.send(batch)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]
    assert [r.provider_message_id for r in results] == ["a", None, "c"]
    assert results[1].error_detail == "Invalid mobile number"
    (call,) = sent("POST", BULK)
    assert orjson.loads(call.kwargs["data"]) == {
        "sendSmsRequests": [
            {"recipientNumber": "+27820000001", "message": "Hello", "dataField": "1"},
            {"recipientNumber": "+2782", "message": "Hello", "dataField": "2"},
            {"recipientNumber": "+27820000003", "message": "Hello", "dataField": "3"},
        ]
    }
    assert call.kwargs["headers"]["token"] == "tok-123"


async def test_bulk_length_mismatch_is_unknown_for_all(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(BULK, payload={"sendSmsResponses": [{"messageId": "a"}]})
    results = await adapter(bulk=True).send([message(1), message(2)])
    assert [r.outcome for r in results] == [Outcome.UNKNOWN, Outcome.UNKNOWN]


async def test_bulk_400_resends_each_message_singly(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(BULK, status=400, payload={"code": 2, "message": "Invalid mobile number"})
    http.post(SEND, payload={"messageId": "ok-1"})
    http.post(SEND, status=400, payload={"code": 2, "message": "Invalid mobile number"})
    results = await adapter(bulk=True, concurrency=1).send([message(1), message(2)])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED]
    assert len(sent("POST", SEND)) == 2


async def test_a_single_send_adapter_refuses_a_batch(
    message: MakeMessage, adapter: MakeAdapter
) -> None:
    zc = adapter(bulk=False)
    assert zc.max_batch == 1
    with pytest.raises(ValueError, match="exceeds"):
        await zc.send([message(1), message(2)])


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (
            400,
            {
                "code": 2,
                "status": "BAD_REQUEST",
                "message": "Invalid mobile number",
                "developerMessage": "Invalid mobile number",
            },
            "2",
        ),
        (400, {"code": 3, "status": "BAD_REQUEST", "message": "Message cannot be empty"}, "3"),
        (401, None, "401"),
        (403, {"code": 403, "message": "Forbidden"}, "403"),
        (404, None, "404"),
    ],
)
async def test_documented_errors_are_rejections(
    http: Any, status: int, payload: Any, code: str, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=status, payload=payload)
    (result,) = await adapter().send([message()])
    # 401/403 are the account's problem, not the message's (issue 17 item 1)
    assert result.outcome is (Outcome.ACCOUNT if status in (401, 403) else Outcome.REJECTED)
    assert result.error_code == code
    if payload and "message" in payload:
        assert result.error_detail == payload["message"]


async def test_429_is_retry_after_the_given_seconds(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=429, headers={"Retry-After": "7"})
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.RETRY
    assert result.retry_after == 7


async def test_429_with_an_http_date(http: Any, message: MakeMessage, adapter: MakeAdapter) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    http.post(SEND, status=429, headers={"Retry-After": when})
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.RETRY
    assert result.retry_after is not None
    assert 100 < result.retry_after <= 120


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unknown(
    http: Any, status: int, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, status=status, body=b"oops")
    (result,) = await adapter().send([message()])
    assert result.outcome is Outcome.UNKNOWN
    assert result.error_code == str(status)


async def test_bulk_5xx_is_unknown_for_all(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(BULK, status=500)
    results = await adapter(bulk=True).send([message(1), message(2)])
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        *transport_failures("zc.test"),
        pytest.param(
            aiohttp.ServerTimeoutError("read timeout"), Outcome.UNKNOWN, id="read-timeout"
        ),
    ],
)
async def test_transport_failures(
    http: Any, exception: Exception, outcome: Outcome, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, exception=exception)
    (result,) = await adapter().send([message()])
    assert result.outcome is outcome


# --- webhooks --------------------------------------------------------------------------------


FORM = "application/x-www-form-urlencoded"


def test_delivery_report_in_the_query(adapter: MakeAdapter) -> None:
    query = {"secret": "s3cret", "status": "DELIVERED", "messageId": "40124213"}
    events = adapter().parse_webhook("", b"", query)
    (receipt,) = events.receipts
    assert receipt.provider_message_id == "40124213"
    assert receipt.status is MessageStatus.DELIVERED
    assert receipt.provider_status == "DELIVERED"
    assert receipt.message_id is None
    assert receipt.event_id is None
    assert "secret" not in receipt.raw
    assert not events.inbound


def test_delivery_report_as_form_with_our_id(adapter: MakeAdapter) -> None:
    body = b"messageId=40124213&status=FAILED_OPTOUT&dataField=42"
    (receipt,) = adapter().parse_webhook(FORM, body, {"secret": "s3cret"}).receipts
    assert receipt.message_id == 42
    assert receipt.status is MessageStatus.UNDELIVERED
    assert receipt.error_code == "FAILED_OPTOUT"


def test_delivery_report_as_json(adapter: MakeAdapter) -> None:
    body = orjson.dumps({"messageId": 99, "status": "SENT", "dataField": "7"})
    (receipt,) = adapter().parse_webhook("application/json", body, {}).receipts
    assert (receipt.provider_message_id, receipt.message_id) == ("99", 7)
    assert receipt.status is MessageStatus.SENT


def test_unknown_status_is_kept_not_mapped(adapter: MakeAdapter) -> None:
    body = b"messageId=5&status=EXPLODED"
    (receipt,) = adapter().parse_webhook(FORM, body, {}).receipts
    assert receipt.status is None
    assert receipt.provider_status == "EXPLODED"


def test_reply_is_inbound(adapter: MakeAdapter) -> None:
    body = (
        b"from=%2B27725551234&repliedToMessageId=121212&messageId=124567"
        b"&message=Thanks&date=201404282055&campaign=shoe+campaign&dataField=custom"
    )
    events = adapter().parse_webhook(FORM, body, {"secret": "s3cret"})
    (reply,) = events.inbound
    assert reply.from_ == "+27725551234"
    assert reply.text == "Thanks"
    assert reply.provider_message_id == "124567"
    assert reply.in_reply_to == "121212"
    assert not events.receipts
    assert not events.opt_changes


def test_stop_reply_is_also_an_opt_out(adapter: MakeAdapter) -> None:
    body = b"from=27725551234&messageId=1&message=stop"
    events = adapter().parse_webhook(FORM, body, {})
    (change,) = events.opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+27725551234", True, "sms")


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (FORM, b"just some text", "neither"),
        (FORM, b"\xff\xfe", "form"),
        ("application/json", b"{not json", "JSON"),
        ("application/json", b"[1, 2]", "parameters or a JSON object"),
        (FORM, b"campaign=x", "neither"),
        (FORM, b"status=DELIVERED", "without messageId"),
        ("text/xml", b"<dlr/>", "content type"),
    ],
)
def test_malformed_webhooks(
    content_type: str, body: bytes, reason: str, adapter: MakeAdapter
) -> None:
    with pytest.raises(MalformedWebhook, match=reason):
        adapter().parse_webhook(content_type, body, {})


def test_webhook_secret_in_the_query(adapter: MakeAdapter) -> None:
    zc = adapter()
    assert zc.webhook_authentic({}, {"secret": "s3cret"})
    assert not zc.webhook_authentic({}, {"secret": "wrong"})
    assert not zc.webhook_authentic({}, {})
    assert not zc.webhook_authentic({"X-Webhook-Secret": "s3cret"}, {})
    assert zc.webhook_url("https://engine.example.com/") == (
        "https://engine.example.com/webhooks/zc-main/s3cret"
    )


def test_without_a_secret_every_call_is_accepted(adapter: MakeAdapter) -> None:
    zc = adapter(webhook_secret=None)
    assert zc.webhook_authentic({}, {})
    assert zc.webhook_url("https://e.example") == "https://e.example/webhooks/zc-main"


# --- lookups ---------------------------------------------------------------------------------


async def test_poll(http: Any, adapter: MakeAdapter, sent: Sent) -> None:
    http.get(
        f"{BASE}/api/rest/v1/messages/m1",
        payload={
            "messageId": "m1",
            "messageStatus": "DELIVERED",
            "userDataField": "42",
            "toNumber": "+27821234567",
        },
    )
    http.get(f"{BASE}/api/rest/v1/messages/m2", status=404, payload={"code": 404})
    zc = adapter()
    assert zc.supports_polling
    (receipt,) = await zc.poll(["m1", "m2"])
    assert receipt.provider_message_id == "m1"
    assert receipt.message_id == 42
    assert receipt.status is MessageStatus.DELIVERED
    (call,) = sent("GET", f"{BASE}/api/rest/v1/messages/m1")
    assert call.kwargs["headers"]["email"] == "ops@example.com"


async def test_balance(http: Any, adapter: MakeAdapter) -> None:
    http.get(f"{BASE}/api/rest/v1/account/balance", payload={"creditBalance": 1234.5})
    assert await adapter().balance() == Decimal("1234.5")


# --- issue 17: bulk by default, the failure vocabulary, every joining form, the seed -----------

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zoomconnect"


def seed_json(name: str) -> Any:
    """A request body exactly as the seed prints it (typographic quotes) read as JSON."""
    text = (FIXTURES / name).read_text()
    return orjson.loads(text.replace("“", '"').replace("”", '"'))


def listener_view(url: str) -> tuple[str | None, dict[str, str]]:
    """What the webhook listener hands over for a call to ``url`` (the path-secret contract):
    the secret segment cut at its first ``&``, whose tail joins the query parameters."""
    parsed = URL(url)
    *_, account, segment = parsed.path.split("/")
    if account != "zc-main":  # no secret in the path
        return None, dict(parsed.query)
    secret, _, tail = segment.partition("&")
    return secret, {**dict(parse_qsl(tail, keep_blank_values=True)), **parsed.query}


async def test_send_bulk_is_the_default(
    http: Any, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(BULK, payload={"sendSmsResponses": [{"messageId": "a"}, {"messageId": "b"}]})
    zc = adapter()
    assert zc.max_batch == 100
    results = await zc.send([message(1), message(2)])
    assert [r.provider_message_id for r in results] == ["a", "b"]


async def test_an_account_refused_send_bulk_sends_singly_from_then_on(
    http: Any, message: MakeMessage, adapter: MakeAdapter, sent: Sent
) -> None:
    http.post(BULK, status=403, payload={"code": 403, "message": "Forbidden"})
    http.post(SEND, payload={"messageId": "s"}, repeat=True)
    zc = adapter(concurrency=1)
    first = await zc.send([message(1), message(2)])
    again = await zc.send([message(3), message(4)])
    assert [r.outcome for r in first + again] == [Outcome.ACCEPTED] * 4
    assert len(sent("POST", BULK)) == 1
    assert len(sent("POST", SEND)) == 4


def test_the_seed_request_bodies_name_every_field_we_send(
    message: MakeMessage, adapter: MakeAdapter
) -> None:
    single, bulk = seed_json("send_request.txt"), seed_json("send_bulk_request.txt")
    ours = adapter(campaign="spring")._request_body(message(42))
    assert set(ours) <= set(single)
    assert set(single) == set(bulk["sendSmsRequests"][0])
    assert {"sendSmsRequests"} <= set(bulk)


@pytest.mark.parametrize(
    ("word", "status", "code"),
    [
        ("SCHEDULED", MessageStatus.SENT, None),
        ("UNKNOWN", MessageStatus.SENT, None),
        ("SENT", MessageStatus.SENT, None),
        ("DELIVERED", MessageStatus.DELIVERED, None),
        ("FAILED", MessageStatus.UNDELIVERED, "FAILED"),
        ("FAILED_REFUNDED", MessageStatus.UNDELIVERED, "FAILED_REFUNDED"),
        ("FAILED_OPTOUT", MessageStatus.UNDELIVERED, "FAILED_OPTOUT"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_failure_vocabulary(
    word: str, status: MessageStatus, code: str | None, adapter: MakeAdapter
) -> None:
    """After acceptance nothing is ``failed``: a failure is ``undelivered`` with its word."""
    query = {"messageId": "1", "status": word, "recipientNumber": "27821234567"}
    events = adapter().parse_webhook("", b"", query)
    (receipt,) = events.receipts
    assert (receipt.status, receipt.error_code) == (status, code)
    assert [(o.phone, o.opted_out) for o in events.opt_changes] == (
        [("+27821234567", True)] if word == "FAILED_OPTOUT" else []
    )


async def test_failed_optout_suppresses_the_number_this_process_sent_to(
    http: Any, caplog: pytest.LogCaptureFixture, message: MakeMessage, adapter: MakeAdapter
) -> None:
    http.post(SEND, payload={"messageId": "zc-77", "error": None})
    zc = adapter(bulk=False)
    await zc.send([message(42, to="+27820000077")])
    events = zc.parse_webhook(FORM, b"&status=FAILED_OPTOUT&messageId=zc-77", {})
    (change,) = events.opt_changes
    assert (change.phone, change.opted_out, change.channel) == ("+27820000077", True, "sms")
    assert events.receipts[0].status is MessageStatus.UNDELIVERED
    assert events.receipts[0].opt_out
    with caplog.at_level("INFO", "engine.providers.zoomconnect"):
        unknown = zc.parse_webhook(FORM, b"status=FAILED_OPTOUT&messageId=elsewhere", {})
    assert unknown.opt_changes == () and len(unknown.receipts) == 1
    # flagged: the reconciler suppresses the number from the message it settles on
    assert unknown.receipts[0].opt_out
    assert "suppressed once the receipt is applied" in caplog.text


@pytest.mark.parametrize("join", ["?", "&", "?&", "? &"])
@pytest.mark.parametrize("secret_in", ["path", "query"])
def test_a_delivery_report_in_every_joining_form(
    join: str, secret_in: str, adapter: MakeAdapter
) -> None:
    zc = adapter()
    base = (
        "https://e.example/webhooks/zc-main/s3cret"
        if secret_in == "path"
        else "https://e.example/webhooks/zc-main?secret=s3cret"
    )
    secret, query = listener_view(f"{base}{join}status=DELIVERED&messageId=40124213&dataField=42")
    if secret_in == "path":
        assert secret == "s3cret"
    else:
        assert zc.webhook_authentic({}, query)
    (receipt,) = zc.parse_webhook("", b"", query).receipts
    assert (receipt.provider_message_id, receipt.message_id, receipt.status) == (
        "40124213",
        42,
        MessageStatus.DELIVERED,
    )
    assert "s3cret" not in orjson.dumps(receipt.raw).decode()


@pytest.mark.parametrize(
    "body", [b"status=SENT&messageId=9", b"&status=SENT&messageId=9", b"?&status=SENT&messageId=9"]
)
def test_a_delivery_report_as_form_fields(body: bytes, adapter: MakeAdapter) -> None:
    zc = adapter()
    assert zc.webhook_authentic({}, {"secret": "s3cret"})
    (receipt,) = zc.parse_webhook(FORM, body, {"secret": "s3cret"}).receipts
    assert (receipt.provider_message_id, receipt.status) == ("9", MessageStatus.SENT)
    assert "secret" not in receipt.raw


def test_a_glued_secret_is_still_only_the_secret(adapter: MakeAdapter) -> None:
    zc = adapter()
    assert not zc.webhook_authentic({}, {"secret": "s3cretX?status=SENT"})
    assert not zc.webhook_authentic({}, {"secret": "?s3cret"})


def test_the_seed_delivery_report_example(adapter: MakeAdapter) -> None:
    url = (FIXTURES / "delivery_report_url.txt").read_text().strip()
    query = url.partition("report.php")[2]  # what ZoomConnect appends: "? &status=… &…"
    for given in (
        listener_view(f"https://e.example/webhooks/zc-main/s3cret{query}")[1],
        dict(parse_qsl(query.lstrip("?"), keep_blank_values=True)),
    ):
        (receipt,) = adapter().parse_webhook("", b"", given).receipts
        assert (receipt.provider_message_id, receipt.status) == (
            "40124213",
            MessageStatus.DELIVERED,
        )
    body = query.encode()
    (receipt,) = adapter().parse_webhook(FORM, body, {}).receipts
    assert receipt.provider_message_id == "40124213"


def test_the_seed_reply_example(adapter: MakeAdapter) -> None:
    url = (FIXTURES / "reply_url.txt").read_text().strip()
    query = url.partition("receive-sms.php")[2]
    given = listener_view(f"https://e.example/webhooks/zc-main/s3cret{query}")[1]
    (reply,) = adapter().parse_webhook("", b"", given).inbound
    assert (reply.from_, reply.text, reply.provider_message_id, reply.in_reply_to) == (
        "+27725551234",
        "REPLY",
        "124567",
        "121212",
    )
    assert reply.raw["dataField"] == "custom"  # the link to the message replied to
    assert reply.raw["campaign"] == "shoe campaign"
