"""Scheduling and expansion on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import campaigns, db, expander, message_rows, run_plans, scheduler
from engine.config import EngineConfig
from engine.expander import Expander
from engine.status import RunStatus
from engine.timing import SendTiming
from tests.integration.helpers import add_contacts, campaign, numbers, statuses

CONFIG = EngineConfig()
GRACE = timedelta(hours=1)


async def fire(conn: asyncpg.Connection, spec: Any, now: datetime | None = None) -> int:
    """Apply a campaign and let the scheduler create its (single) due run."""
    now = now or datetime.now(UTC)
    await campaigns.apply_campaign(conn, spec, Path("test.yaml"), CONFIG, now=now)
    fired = await scheduler.create_due_runs(conn, now, GRACE)
    assert [f.status for f in fired] == [RunStatus.SCHEDULED]
    assert fired[0].run_id is not None
    return fired[0].run_id


async def test_expansion_queues_every_recipient_once_with_price_and_encoding(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(12)
    await add_contacts(conn, [{"phone": p, "first_name": f"N{i}"} for i, p in enumerate(phones)])
    run_id = await fire(conn, campaign())
    result = await Expander(pool, CONFIG, "w1", batch_size=5).run_once()
    assert result is not None
    assert result.run_id == run_id
    assert result.status is RunStatus.SENDING
    assert result.recipients == 12
    assert result.estimated_cost == Decimal(12)
    rows = await conn.fetch(
        "SELECT phone, body, encoding, segments, cost, status::text, next_attempt_at, expires_at"
        " FROM messages WHERE run_id = $1 ORDER BY phone",
        run_id,
    )
    assert [r["phone"] for r in rows] == sorted(phones)
    assert rows[0]["body"] == "Hi N0, 20% off"
    assert {r["status"] for r in rows} == {"queued"}
    assert all(r["encoding"] == "GSM-7" and r["segments"] == 1 for r in rows)
    assert all(r["expires_at"] - r["next_attempt_at"] == timedelta(hours=24) for r in rows)
    run = await conn.fetchrow(
        "SELECT status::text, recipients, counts FROM campaign_runs WHERE id = $1", run_id
    )
    assert run["status"] == "sending"
    assert run["counts"] == {"queued": 12}


async def test_each_skip_reason_is_recorded(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    ok, suppressed, capped, no_var, staff, twice = numbers(6)
    await add_contacts(
        conn,
        [
            {"phone": p, "attributes": {"promo": "x"}}
            for p in (ok, suppressed, capped, staff, twice)
        ],
    )
    await add_contacts(conn, [{"phone": no_var}])
    await add_contacts(conn, [{"phone": staff}], groups=["staff"])
    await add_contacts(conn, [{"phone": twice}], groups=["other"])
    await conn.execute("INSERT INTO suppressions (phone, source) VALUES ($1, 'test')", suppressed)
    earlier = await fire(conn, campaign("earlier", audience={"groups": [], "contacts": [capped]}))
    await Expander(pool, CONFIG, "w1").run_once()
    assert (await statuses(conn, earlier))[capped] == "queued"
    spec = campaign(
        audience={"groups": ["all", "other"], "exclude_groups": ["staff"]},
        message={"body": "{{ promo }}"},
        limits={"frequency_cap": "1/24h"},
    )
    run_id = await fire(conn, spec)
    result = await Expander(pool, CONFIG, "w1").run_once()
    assert result is not None
    got = await statuses(conn, run_id)
    assert got == {
        ok: "queued",
        suppressed: "suppressed",
        capped: "frequency_capped",
        no_var: "render_error",
        twice: "queued",
    }
    detail = await conn.fetchval(
        "SELECT error_detail FROM messages WHERE phone = $1 AND run_id = $2", no_var, run_id
    )
    assert "promo" in detail
    assert result.counts["duplicate"] == 1  # 'twice' is in two included groups


async def test_too_long_and_smart_encoding(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    short, long_ = numbers(2)
    await add_contacts(
        conn,
        [
            {"phone": short, "attributes": {"text": "“quoted” — ok"}},
            {"phone": long_, "attributes": {"text": "x" * 400}},
        ],
    )
    spec = campaign(message={"body": "{{ text }}", "encoding": "smart", "max_segments": 2})
    run_id = await fire(conn, spec)
    await Expander(pool, CONFIG, "w1").run_once()
    rows = {
        r["phone"]: r
        for r in await conn.fetch(
            "SELECT phone, status::text, body, encoding, segments, error_detail FROM messages"
            " WHERE run_id = $1",
            run_id,
        )
    }
    assert rows[short]["status"] == "queued"
    assert rows[short]["body"] == '"quoted" - ok'
    assert rows[short]["encoding"] == "GSM-7"
    assert rows[long_]["status"] == "too_long"
    assert rows[long_]["error_detail"] == "3 segments (max 2)"


async def test_locale_fallback(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    mx, es, fr, none = numbers(4)
    await add_contacts(
        conn,
        [
            {"phone": mx, "locale": "es-MX"},
            {"phone": es, "locale": "es"},
            {"phone": fr, "locale": "fr"},
            {"phone": none},
        ],
    )
    spec = campaign(message={"body": "Hello", "locales": {"es": "Hola", "es-MX": "Qué onda"}})
    run_id = await fire(conn, spec)
    await Expander(pool, CONFIG, "w1").run_once()
    rows = {
        r["phone"]: (r["body"], r["locale"])
        for r in await conn.fetch(
            "SELECT phone, body, locale FROM messages WHERE run_id = $1", run_id
        )
    }
    assert rows == {
        mx: ("Qué onda", "es-MX"),
        es: ("Hola", "es"),
        fr: ("Hello", None),
        none: ("Hello", None),
    }


async def test_quiet_hours_in_each_recipients_time_zone(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # 2027-01-15 20:30 UTC: 22:30 in Johannesburg (quiet), 15:30 in New York (not),
    # 05:30 next day in Tokyo (quiet until 08:00 local = 23:00 UTC)
    joburg, new_york, tokyo = numbers(3)
    await add_contacts(
        conn,
        [
            {"phone": joburg, "timezone": "Africa/Johannesburg"},
            {"phone": new_york, "timezone": "America/New_York"},
            {"phone": tokyo, "timezone": "Asia/Tokyo"},
        ],
    )
    now = datetime(2027, 1, 15, 20, 30, tzinfo=UTC)
    spec = campaign(
        schedule={"at": "2027-01-15 20:30", "quiet_hours": "21:00-08:00", "validity": "6h"}
    )
    run_id = await fire(conn, spec, now)
    expanded = await Expander(pool, CONFIG, "w1", clock=lambda: now).run_once()
    assert expanded is not None
    rows = {
        r["phone"]: r
        for r in await conn.fetch(
            "SELECT phone, next_attempt_at, expires_at FROM messages WHERE run_id = $1", run_id
        )
    }
    assert rows[joburg]["next_attempt_at"] == datetime(2027, 1, 16, 6, 0, tzinfo=UTC)
    assert rows[tokyo]["next_attempt_at"] == datetime(2027, 1, 15, 23, 0, tzinfo=UTC)
    assert rows[new_york]["next_attempt_at"] == now
    assert rows[joburg]["expires_at"] == datetime(2027, 1, 16, 12, 0, tzinfo=UTC)


async def test_number_time_zone_used_when_contact_has_none(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # a Japanese mobile number without a contact time zone: Asia/Tokyo from the number
    tokyo = "+819012345678"
    await add_contacts(conn, [{"phone": tokyo}])
    now = datetime(2027, 1, 15, 20, 30, tzinfo=UTC)
    spec = campaign(schedule={"at": "2027-01-15 20:30", "quiet_hours": "21:00-08:00"})
    run_id = await fire(conn, spec, now)
    await Expander(pool, CONFIG, "w1", clock=lambda: now).run_once()
    sent_at = await conn.fetchval("SELECT next_attempt_at FROM messages WHERE run_id = $1", run_id)
    assert sent_at == datetime(2027, 1, 15, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(("budget", "status"), [(5, RunStatus.SENDING), (4, RunStatus.OVER_BUDGET)])
async def test_budget_gate(
    conn: asyncpg.Connection, pool: asyncpg.Pool, budget: int, status: RunStatus
) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(5)])
    run_id = await fire(conn, campaign(limits={"budget": budget}))
    result = await Expander(pool, CONFIG, "w1").run_once()
    assert result is not None
    assert result.status is status
    run = await conn.fetchrow(
        "SELECT status::text, reason, estimated_cost FROM campaign_runs WHERE id = $1", run_id
    )
    assert run["status"] == status.value
    assert run["estimated_cost"] == Decimal(5)
    if status is RunStatus.OVER_BUDGET:
        assert run["reason"] == "estimated cost 5 credits exceeds the budget of 4 credits"


async def test_crash_mid_expansion_resumes_without_duplicates_or_gaps(
    conn: asyncpg.Connection, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = numbers(50)
    await add_contacts(conn, [{"phone": p} for p in phones])
    run_id = await fire(conn, campaign())
    line = message_rows.RunPlan.line
    seen = 0

    def crashing(self: message_rows.RunPlan, rec: Any, timing: Any, cap: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == 23:
            raise RuntimeError("injected crash")
        return line(self, rec, timing, cap)

    monkeypatch.setattr(message_rows.RunPlan, "line", crashing)
    with pytest.raises(RuntimeError, match="injected crash"):
        await Expander(pool, CONFIG, "dead", batch_size=10).run_once()
    partial = await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run_id)
    assert partial in (10, 20)  # whole batches only
    status = await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
    assert status == "expanding"
    monkeypatch.setattr(message_rows.RunPlan, "line", line)
    result = await Expander(pool, CONFIG, "alive", batch_size=10).run_once()
    assert result is not None
    assert result.status is RunStatus.SENDING
    assert sorted(await statuses(conn, run_id)) == sorted(phones)
    assert result.recipients == 50


async def test_batches_written_at_once_commit_in_order(
    conn: asyncpg.Connection, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches are written at once. When the earlier one fails after the later one's
    COPY is done, the later one must roll back too: committed, it would leave a gap that
    its checkpoint hides from the resume."""
    phones = numbers(50)
    await add_contacts(conn, [{"phone": p} for p in phones])
    run_id = await fire(conn, campaign())
    real = expander._write
    calls: list[int] = []

    async def failing_second(*args: Any) -> None:
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            await asyncio.sleep(0.5)  # the third batch is written meanwhile
            raise RuntimeError("injected failure")
        await real(*args)

    monkeypatch.setattr(expander, "_write", failing_second)
    with pytest.raises(RuntimeError, match="injected failure"):
        await Expander(pool, CONFIG, "dead", batch_size=10).run_once()
    assert len(calls) == 3  # the third batch was under way when the second failed
    kept = await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run_id)
    checkpoint = await conn.fetchval(
        "SELECT (checkpoint->>'after')::bigint FROM campaign_runs WHERE id = $1", run_id
    )
    below = await conn.fetchval(
        "SELECT count(*) FROM contacts WHERE id <= $1 AND phone = ANY($2::text[])",
        checkpoint,
        phones,
    )
    assert kept == below == 10  # the first batch alone, and the checkpoint right after it
    monkeypatch.setattr(expander, "_write", real)
    result = await Expander(pool, CONFIG, "alive", batch_size=10).run_once()
    assert result is not None and result.recipients == 50
    assert sorted(await statuses(conn, run_id)) == sorted(phones)


async def test_two_expanders_never_take_the_same_run(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(30)])
    run_id = await fire(conn, campaign())
    results = await asyncio.gather(
        Expander(pool, CONFIG, "a", batch_size=3).run_once(),
        Expander(pool, CONFIG, "b", batch_size=3).run_once(),
    )
    done = [r for r in results if r is not None]
    assert len(done) == 1
    assert done[0].run_id == run_id
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run_id) == 30


async def test_two_schedulers_create_each_run_once(
    conn: asyncpg.Connection, database_url: str
) -> None:
    now = datetime.now(UTC)
    await campaigns.apply_campaign(conn, campaign(), Path("t.yaml"), CONFIG, now=now)
    others = [await db.connect(database_url) for _ in range(2)]
    try:
        fired = await asyncio.gather(*(scheduler.create_due_runs(c, now, GRACE) for c in others))
    finally:
        for other in others:
            await other.close()
    assert sorted(len(f) for f in fired) == [0, 1]
    assert await conn.fetchval("SELECT count(*) FROM campaign_runs") == 1
    assert await conn.fetchval("SELECT status::text FROM campaigns") == "finished"


async def test_missed_firings_are_recorded_and_the_latest_made_up(conn: asyncpg.Connection) -> None:
    spec = campaign(schedule={"cron": "0 * * * *", "timezone": "UTC"})
    applied_at = datetime(2027, 1, 10, 5, 30, tzinfo=UTC)
    await campaigns.apply_campaign(conn, spec, Path("t.yaml"), CONFIG, now=applied_at)
    # no scheduler ran from 06:00 until 09:20: 06, 07, 08 missed; 09:00 is within grace
    fired = await scheduler.create_due_runs(conn, datetime(2027, 1, 10, 9, 20, tzinfo=UTC), GRACE)
    assert [(f.scheduled_for.hour, f.status) for f in fired] == [
        (6, RunStatus.MISSED),
        (7, RunStatus.MISSED),
        (8, RunStatus.MISSED),
        (9, RunStatus.SCHEDULED),
    ]
    reason = await conn.fetchval(
        "SELECT reason FROM campaign_runs WHERE status = 'missed' ORDER BY scheduled_for LIMIT 1"
    )
    assert reason.startswith("missed: no scheduler ran within 1:00:00")
    assert await conn.fetchval("SELECT next_run_at FROM campaigns") == datetime(
        2027, 1, 10, 10, 0, tzinfo=UTC
    )


async def test_latest_firing_too_old_is_missed(conn: asyncpg.Connection) -> None:
    spec = campaign(schedule={"at": "2027-01-10 06:00"})
    await campaigns.apply_campaign(
        conn, spec, Path("t.yaml"), CONFIG, now=datetime(2027, 1, 1, tzinfo=UTC)
    )
    fired = await scheduler.create_due_runs(conn, datetime(2027, 1, 10, 8, 0, tzinfo=UTC), GRACE)
    assert [f.status for f in fired] == [RunStatus.MISSED]
    assert await conn.fetchval("SELECT status::text FROM campaigns") == "finished"


async def test_cron_runs_at_local_time_across_daylight_saving(conn: asyncpg.Connection) -> None:
    spec = campaign(schedule={"cron": "0 9 * * *", "timezone": "Europe/London"})
    await campaigns.apply_campaign(
        conn, spec, Path("t.yaml"), CONFIG, now=datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    )
    first = await conn.fetchval("SELECT next_run_at FROM campaigns")
    assert first == datetime(2027, 3, 28, 8, 0, tzinfo=UTC)  # BST began that night
    fired = await scheduler.create_due_runs(conn, first, GRACE)
    assert [f.scheduled_for for f in fired] == [first]
    assert await conn.fetchval("SELECT next_run_at FROM campaigns") == datetime(
        2027, 3, 29, 8, 0, tzinfo=UTC
    )


async def test_account_balance_is_a_second_budget(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    import aiohttp

    from engine.providers import adapter_for
    from engine.simulator import SimulatorSettings, serve

    await add_contacts(conn, [{"phone": p} for p in numbers(5)])
    async with await serve(SimulatorSettings(credit_balance=Decimal(4)), "127.0.0.1", 0) as sim:
        config = EngineConfig.model_validate(
            {
                "providers": {
                    "zc": {
                        "type": "zoomconnect",
                        "base_url": sim.url,
                        "email": "a@b.c",
                        "token": "t",
                    }
                }
            }
        )
        async with aiohttp.ClientSession() as session:
            adapter = adapter_for("zc", config.providers["zc"], session)
            run_id = await fire(conn, campaign(provider="zc"))
            result = await Expander(
                pool, config, "w1", balance=lambda _: adapter.balance()
            ).run_once()
    assert result is not None
    assert result.status is RunStatus.OVER_BUDGET
    assert result.reason == (
        "estimated cost 5 credits exceeds the balance of 4 credits on account zc"
    )
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
        == "over_budget"
    )


def test_copy_line_is_the_row_as_copy_text_for_every_kind_of_recipient() -> None:
    """The hot path's cached COPY tails must say exactly what the row says."""
    config = EngineConfig.model_validate({"pricing": {"prefixes": {"27": "0.5"}}})
    spec = campaign(
        message={"body": "Hi {{ first_name }}\t{{ tier }}", "max_segments": 1},
        schedule={"now": True, "quiet_hours": "21:00-08:00"},
    )
    plan = run_plans.plan_run(7, spec, config)
    timing = SendTiming(spec, datetime(2026, 1, 5, 12, tzinfo=UTC))

    def rec(i: int, phone: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": i,
            "phone": phone,
            "first_name": "Ann",
            "last_name": None,
            "locale": None,
            "timezone": None,
            "attributes": {"tier": "gold"},
            "excluded": False,
            "suppressed": False,
            "recent": 0,
            **fields,
        }

    recipients = [
        rec(1, "+27821234567"),  # queued, priced, SA time zone
        rec(2, "+27821234568", timezone="America/New_York"),  # same text, another zone
        rec(3, "+27821234569"),  # same tail as 1
        rec(4, "+4915112345678"),  # no price for +49
        rec(5, "+27821234570", suppressed=True),
        rec(6, "+27821234571", recent=3),  # over the cap of 2
        rec(7, "+27821234572", first_name="x" * 200),  # too long for 1 segment
    ]
    copy = message_rows.CopyText()
    lines = []
    for r in recipients:
        row = plan.decide(r, timing, 2)
        line = plan.line(r, timing, 2)
        assert row is not None and line is not None
        assert line == "\t".join(copy.field(v) for v in row) + "\n"
        lines.append(line.split("\t"))
    status = message_rows.COPY_COLUMNS.index("status")
    assert [fields[status] for fields in lines] == [
        "queued",
        "queued",
        "queued",
        "failed",
        "suppressed",
        "frequency_capped",
        "too_long",
    ]
    at = message_rows.COPY_COLUMNS.index("next_attempt_at")
    assert lines[0][at] == lines[2][at] != lines[1][at]  # quiet hours read in each zone
    assert "Hi Ann\\tgold" in lines[0]  # a tab in the text is escaped, not a new column
    assert plan.line(rec(8, "+27821234573", excluded=True), timing, 2) is None


async def test_a_render_postgresql_cannot_store_fails_that_recipient_only(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A NUL in a render left the run 'expanding' for ever, retrying the COPY every second."""
    phones = numbers(3)
    await add_contacts(conn, [{"phone": p, "first_name": f"N{i}"} for i, p in enumerate(phones)])
    body = "{% if first_name == 'N1' %}{{ '\\x00' }}{% endif %}Hi {{ first_name }}"
    run_id = await fire(conn, campaign(message={"body": body}))
    result = await Expander(pool, CONFIG, "w1", batch_size=2).run_once()
    assert result is not None
    assert result.status is RunStatus.SENDING
    assert await statuses(conn, run_id) == {
        phones[0]: "queued",
        phones[1]: "render_error",
        phones[2]: "queued",
    }
    detail = await conn.fetchval(
        "SELECT error_detail FROM messages WHERE phone = $1 AND run_id = $2", phones[1], run_id
    )
    assert detail == (
        "the message holds a character that cannot be stored (NUL or an unpaired surrogate)"
    )


async def test_a_render_past_the_template_limits_fails_that_recipient_only(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(3)
    await add_contacts(conn, [{"phone": p, "first_name": f"N{i}"} for i, p in enumerate(phones)])
    body = "{% if first_name == 'N1' %}{{ first_name * 10**9 }}{% endif %}Hi {{ first_name }}"
    run_id = await fire(conn, campaign(message={"body": body}))
    result = await Expander(pool, CONFIG, "w1").run_once()
    assert result is not None
    assert result.status is RunStatus.SENDING
    assert await statuses(conn, run_id) == {
        phones[0]: "queued",
        phones[1]: "render_error",
        phones[2]: "queued",
    }
    detail = await conn.fetchval(
        "SELECT error_detail FROM messages WHERE phone = $1 AND run_id = $2", phones[1], run_id
    )
    assert detail == "a value would be longer than the limit of 100000 characters"


async def test_a_batch_is_rendered_off_the_event_loop_and_stops_when_cancelled() -> None:
    """Rendering is bounded per message, not per batch: it must not hold the loop."""
    threads: list[int] = []

    class Spy:
        def __str__(self) -> str:  # called by the render, in whichever thread renders
            threads.append(threading.get_ident())
            return "spy"

    spec = campaign(message={"body": "Hi {{ spy }}"})
    plan = run_plans.plan_run(7, spec, EngineConfig())
    timing = SendTiming(spec, datetime(2026, 1, 5, 12, tzinfo=UTC))
    records: Any = [
        {
            "id": i,
            "phone": phone,
            "first_name": None,
            "last_name": None,
            "locale": None,
            "timezone": None,
            "attributes": {"spy": Spy()},
            "excluded": False,
            "suppressed": False,
            "recent": 0,
        }
        for i, phone in enumerate(numbers(3))
    ]
    lines = await expander._lines_off_loop(plan, records, timing, None)
    assert [text.split("\t")[2] for text in lines] == [r["phone"] for r in records]
    assert len(threads) == 3
    assert threading.get_ident() not in threads
    stop = threading.Event()
    stop.set()
    with pytest.raises(message_rows.RunStopped):
        plan.lines(records, timing, None, stop)
