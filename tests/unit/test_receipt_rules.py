"""The receipt rules, without a database: forward-only statuses, final receipts settling
unknown and expired messages, one batch's receipts folded per message, parts folded into
one status."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from engine.receipt_rules import RANK, ReceiptOutcome, Seen, fold, parts_status, step
from engine.status import MessageStatus as S

R = ReceiptOutcome
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("current", "new", "outcome"),
    [
        ("sent", "delivered", "applied"),
        ("sent", "sent", "duplicate"),
        ("delivered", "sent", "stale"),
        ("delivered", "read", "applied"),
        ("delivered", "failed", "stale"),
        ("read", "delivered", "stale"),
        ("failed", "delivered", "stale"),
        ("undelivered", "undelivered", "duplicate"),
        ("unknown", "delivered", "applied"),
        ("unknown", "sent", "applied"),
        ("expired", "failed", "applied"),
        ("expired", "sent", "stale"),
        ("cancelled", "delivered", "ignored"),
        ("suppressed", "sent", "ignored"),
    ],
)
def test_step(current: str, new: str, outcome: str) -> None:
    assert step(current, new) == outcome


def test_a_known_message_status_only_moves_forward() -> None:
    # sent, delivered, read, undelivered, failed: a receipt applies only if it is further
    for current, new in itertools.product(RANK, RANK):
        if step(current, new) is R.APPLIED:
            assert RANK[new] > RANK[current], (current, new)


@pytest.mark.parametrize("final", [S.READ, S.UNDELIVERED, S.FAILED])
def test_nothing_moves_a_final_status(final: S) -> None:
    assert {step(final, new) for new in RANK if new != final} == {R.STALE}


@pytest.mark.parametrize("current", [S.UNKNOWN, S.EXPIRED])
@pytest.mark.parametrize("final", [S.DELIVERED, S.READ, S.UNDELIVERED, S.FAILED])
def test_a_final_receipt_settles_unknown_and_expired(current: S, final: S) -> None:
    change, outcomes = fold(7, current, [Seen(1, final, at(30), "E1", "why")])
    assert outcomes == {1: R.APPLIED}
    assert change is not None and change.status == final
    assert change.expected == current
    assert change.sent_at == at(30)  # it was accepted after all: at the latest then


def test_sent_tells_an_unknown_message_was_accepted_but_not_an_expired_one() -> None:
    change, _ = fold(7, S.UNKNOWN, [Seen(1, S.SENT, at(5), provider_id="p9")])
    assert change is not None and (change.status, change.provider_id) == (S.SENT, "p9")
    assert fold(7, S.EXPIRED, [Seen(1, S.SENT, at(5))]) == (None, {1: R.STALE})


def test_out_of_order_receipts_in_one_batch_end_at_the_furthest() -> None:
    receipts = [Seen(1, S.READ, at(30)), Seen(2, S.SENT, at(1)), Seen(3, S.DELIVERED, at(20))]
    change, outcomes = fold(7, S.SENT, receipts)
    assert outcomes == {1: R.APPLIED, 2: R.DUPLICATE, 3: R.APPLIED}
    assert change is not None
    assert (change.status, change.delivered_at, change.read_at) == (S.READ, at(20), at(30))


def test_read_alone_also_records_delivery() -> None:
    change, _ = fold(7, S.SENT, [Seen(1, S.READ, at(30))])
    assert change is not None and change.delivered_at == change.read_at == at(30)


def test_of_two_final_words_in_one_batch_the_first_to_arrive_stands() -> None:
    receipts = [Seen(2, S.FAILED, at(9), "late"), Seen(1, S.DELIVERED, at(8))]
    change, outcomes = fold(7, S.SENT, receipts)
    assert outcomes == {1: R.APPLIED, 2: R.STALE}
    assert change is not None and (change.status, change.code) == (S.DELIVERED, None)


def test_a_failure_records_its_time_code_and_detail() -> None:
    change, _ = fold(7, S.SENT, [Seen(1, S.UNDELIVERED, at(3), "005", "unreachable")])
    assert change is not None
    assert (change.failed_at, change.code, change.detail) == (at(3), "005", "unreachable")


def test_receipts_that_change_nothing_make_no_change() -> None:
    assert fold(7, S.DELIVERED, [Seen(1, S.DELIVERED, at(1)), Seen(2, S.SENT, at(2))]) == (
        None,
        {1: R.DUPLICATE, 2: R.STALE},
    )
    assert fold(7, S.CANCELLED, [Seen(1, S.DELIVERED, at(1))]) == (None, {1: R.IGNORED})


def test_the_provider_id_is_learnt_only_by_a_message_without_one() -> None:
    seen = [Seen(1, S.DELIVERED, at(1), provider_id="p1")]
    learnt, _ = fold(7, S.UNKNOWN, seen)
    kept, _ = fold(7, S.SENT, seen, provider_id="p0")
    assert learnt is not None and learnt.provider_id == "p1"
    assert kept is not None and kept.provider_id is None  # the UPDATE keeps "p0"


@pytest.mark.parametrize(
    ("parts", "segments", "status"),
    [
        ([(1, "delivered"), (2, "delivered")], 3, "sent"),
        ([(1, "delivered"), (2, "delivered"), (3, "delivered")], 3, "delivered"),
        ([(1, "delivered"), (1, "delivered"), (2, "sent")], 2, "sent"),
        ([(1, "delivered"), (2, "undelivered")], 3, "undelivered"),
        ([(1, "read"), (2, "read")], 2, "read"),
        ([(1, "read"), (2, "delivered")], 2, "delivered"),
        ([], 2, "sent"),
        ([(1, "failed"), (2, "read")], 2, "undelivered"),
    ],
)
def test_parts_status(parts: list[tuple[int, str]], segments: int, status: str) -> None:
    assert parts_status(parts, segments) == status


def test_parts_fold_into_one_receipt_that_moves_the_message_once() -> None:
    # the reconciler folds a message's part receipts into one (id -1) before ``fold``
    whole = parts_status([(1, S.DELIVERED), (2, S.DELIVERED)], 2)
    change, outcomes = fold(7, S.SENT, [Seen(-1, whole, at(4))])
    assert outcomes == {-1: R.APPLIED}
    assert change is not None and (change.status, change.delivered_at) == (S.DELIVERED, at(4))
