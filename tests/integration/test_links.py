"""Tracked links, the redirect, clicks and A/B variants on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from engine import campaign_preview, campaigns, link_reports, reports, scheduler, winner
from engine.config import EngineConfig
from engine.expander import Expander
from engine.link_redirect import ClickWriter, LinkRedirect
from engine.report_charts import Step
from engine.status import RunStatus
from tests.integration.helpers import add_contacts, campaign, fire_and_expand, numbers

CONFIG = EngineConfig()
BASE = "https://s.example.com"
LONG = "https://shop.example.com/collections/spring-sale-2026?ref=sms&campaign=spring"
SHORT = re.compile(re.escape(BASE) + r"/l/([0-9A-Za-z]{8})")


def tracked(name: str = "promo", **overrides: Any) -> Any:
    return campaign(
        name,
        links={
            "track": True,
            "base_url": BASE,
            "utm": {"source": "sms", "campaign": "{{ campaign }}"},
        },
        **overrides,
    )


def two_variants(winner_: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "body": None,  # the helper's default body is merged in otherwise
        "variants": [
            {"name": "short", "body": "Sale: https://a.example/s", "weight": 50},
            {"name": "friendly", "body": "Hi {{ first_name }}! https://a.example/f", "weight": 50},
        ],
    }
    if winner_:
        message["winner"] = winner_
    return message


async def test_every_url_is_shortened_with_codes_copied_beside_the_messages(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(3000)
    await add_contacts(conn, [{"phone": p, "first_name": "Ann"} for p in phones])
    body = "Spring sale, 20% off everything in store and online today only. Shop: " + LONG
    spec = tracked(message={"body": body + " or https://shop.example.com/help. Reply STOP"})
    await campaigns.apply_campaign(conn, spec, __import__("pathlib").Path("t.yaml"), CONFIG)
    [firing] = await scheduler.create_due_runs(conn, datetime.now(UTC), timedelta(hours=1))
    result = await Expander(pool, CONFIG, "w", batch_size=700).run_once()
    assert result is not None and result.status is RunStatus.SENDING
    rows = await conn.fetch(
        "SELECT phone, body, segments, cost FROM messages WHERE run_id = $1", firing.run_id
    )
    codes = await conn.fetch("SELECT * FROM link_codes WHERE run_id = $1", firing.run_id)
    assert len(rows) == 3000 and len(codes) == 6000
    assert len({c["code"] for c in codes}) == 6000
    by_code = {c["code"]: c for c in codes}
    for row in rows[:50]:
        found = SHORT.findall(row["body"])
        assert len(found) == 2
        assert row["body"].endswith("/l/" + found[1] + ". Reply STOP")  # the period kept
        first, second = by_code[found[0]], by_code[found[1]]
        assert (first["phone"], first["link_no"], second["link_no"]) == (row["phone"], 1, 2)
        assert first["url"] == LONG + "&utm_source=sms&utm_campaign=promo"
        assert second["url"] == "https://shop.example.com/help?utm_source=sms&utm_campaign=promo"
    # segments and cost on the shortened text: 2 segments with the long URL, 1 without
    assert {r["segments"] for r in rows} == {1}


async def test_preview_shows_the_short_sample_and_what_shortening_saved(
    conn: asyncpg.Connection,
) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(4)])
    body = "Spring sale, 20% off everything in store and online today only. Shop: " + LONG
    spec = tracked(message={"body": body + " Reply STOP to opt out"})
    preview = await campaign_preview.preview_campaign(conn, spec, CONFIG)
    assert SHORT.search(preview.samples[0].text or "")
    assert preview.segments == 4
    assert preview.saved_segments == 4 and preview.saved_credits == 4


async def _serve(redirect: LinkRedirect) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(redirect.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def redirect(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, LinkRedirect]]:
    clicks = ClickWriter(pool, every=0.05)
    await clicks.start()
    served = LinkRedirect(pool, clicks)
    async for url in _serve(served):
        yield url, served
    await clicks.stop()


async def _codes(conn: asyncpg.Connection, run_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT l.code, l.url, m.id AS message_id, m.variant FROM link_codes l"
        " JOIN messages m ON m.run_id = l.run_id AND m.phone = l.phone"
        " WHERE l.run_id = $1 ORDER BY m.id",
        run_id,
    )


async def _wait_for(conn: asyncpg.Connection, query: str, want: int, *args: Any) -> None:
    for _ in range(400):
        if await conn.fetchval(query, *args) == want:
            return
        await asyncio.sleep(0.025)
    assert await conn.fetchval(query, *args) == want


async def test_redirect_404_head_and_bots_then_the_report_per_link(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    redirect: tuple[str, LinkRedirect],
) -> None:
    url, served = redirect
    registry = CollectorRegistry()
    registry.register(served.collector())
    await add_contacts(conn, [{"phone": p} for p in numbers(4)])
    run_id = await fire_and_expand(
        conn, pool, tracked(message={"body": "Go https://a.example/x now"}), CONFIG
    )
    await conn.execute(
        "UPDATE messages SET status = 'delivered', sent_at = now() - interval '1 min',"
        " delivered_at = now() - interval '30 s' WHERE run_id = $1",
        run_id,
    )
    codes = await _codes(conn, run_id)
    target = "https://a.example/x?utm_source=sms&utm_campaign=promo"
    for code in (codes[0]["code"], codes[0]["code"], codes[1]["code"]):
        async with session.get(f"{url}/l/{code}", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == target
    async with session.head(f"{url}/l/{codes[2]['code']}", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == target
    bot = {"User-Agent": "facebookexternalhit/1.1"}
    async with session.get(f"{url}/l/{codes[3]['code']}", headers=bot, allow_redirects=False) as r:
        assert r.status == 302
    for missing in ("ZZZZZZZZ", "no-such", "x" * 40):
        async with session.get(f"{url}/l/{missing}", allow_redirects=False) as response:
            assert response.status == 404
    await _wait_for(conn, "SELECT count(*) FROM link_clicks", 5)
    # the flusher counts its batch once the INSERT has returned, a moment after the commit
    for _ in range(400):
        if served.clicks.written == 5:
            break
        await asyncio.sleep(0.025)
    exposition = generate_latest(registry).decode()
    assert 'engine_link_redirects_total{agent="human",status="302"} 4.0' in exposition
    assert 'engine_link_redirects_total{agent="human",status="404"} 3.0' in exposition
    assert "engine_link_clicks_written_total 5.0" in exposition
    agents = Counter(
        r["agent"]
        for r in await conn.fetch("SELECT agent FROM link_clicks WHERE run_id = $1", run_id)
    )
    assert agents == {"human": 4, "bot": 1}
    [link] = await conn.fetch("SELECT * FROM link_outcomes WHERE run_id = $1", run_id)
    assert (link["link"], link["messages"], link["delivered"]) == (target, 4, 4)
    assert (link["unique_clickers"], link["clicks"], link["bot_clicks"]) == (3, 4, 1)
    assert float(link["click_through_rate"]) == 0.75
    assert link["median_seconds_to_click"] > 0
    report = await reports.runs_report(conn, "promo", run_id)
    [row] = report.table("links").dicts()
    assert row["unique_clickers"] == 3 and row["clicks"] == 4
    clicked = await conn.fetchrow(
        "SELECT clicks, first_clicked_at FROM message_outcomes WHERE message_id = $1",
        codes[0]["message_id"],
    )
    assert clicked["clicks"] == 2 and clicked["first_clicked_at"] is not None
    steps = await link_reports.with_clicks(conn, run_id, (Step("delivered", 4),))
    assert [(s.label, s.messages, s.losses) for s in steps][1] == (
        "clicked",
        3,
        (("did not click", 1),),
    )
    page = await reports.report_html(conn, "promo", run_id)
    assert "clicked" in page and "<h2>tracked links</h2>" in page and "75.0%" in page


async def test_a_burst_of_clicks_is_answered_while_the_click_writes_wait(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    database_url: str,
) -> None:
    """1,000 concurrent clicks all get their redirect while link_clicks is locked: the
    redirect never waits on the click writes (which land once the lock goes)."""
    await add_contacts(conn, [{"phone": p} for p in numbers(200)])
    run_id = await fire_and_expand(
        conn, pool, tracked(message={"body": "Go https://a.example/x"}), CONFIG
    )
    codes = [r["code"] for r in await _codes(conn, run_id)]
    clicks = ClickWriter(pool, every=0.05)
    await clicks.start()
    blocker = await asyncpg.connect(database_url)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE link_clicks IN ACCESS EXCLUSIVE MODE")
        async for url in _serve(LinkRedirect(pool, clicks)):
            await session.get(f"{url}/l/{codes[0]}", allow_redirects=False)  # the writer's turn
            for _ in range(100):  # until the writer is stuck on the lock
                if await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'link_clicks'::regclass"
                    " AND NOT granted"
                ):
                    break
                await asyncio.sleep(0.02)

            async def click(i: int, url: str = url) -> int:
                target = f"{url}/l/{codes[i % len(codes)]}"
                async with session.get(target, allow_redirects=False) as response:
                    return response.status

            answers = await asyncio.gather(*(click(i) for i in range(1000)))
            assert Counter(answers) == {302: 1000}
            # every redirect was answered while no click could be written
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'link_clicks'::regclass"
                )
                == 1
            )
            await lock.rollback()
            await _wait_for(conn, "SELECT count(*) FROM link_clicks", 1001)
    finally:
        await blocker.close()
        await clicks.stop()


async def test_variants_are_recorded_and_stable_across_runs(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(400)
    await add_contacts(conn, [{"phone": p, "first_name": "Bo"} for p in phones])
    spec = tracked(message=two_variants())
    run_id = await fire_and_expand(conn, pool, spec, CONFIG)
    first = dict(await conn.fetch("SELECT phone, variant FROM messages WHERE run_id = $1", run_id))
    counts = Counter(first.values())
    assert set(counts) == {"short", "friendly"} and abs(counts["short"] - 200) < 50
    bodies = await conn.fetch("SELECT variant, body FROM messages WHERE run_id = $1", run_id)
    assert all(b["body"].startswith("Hi Bo!") == (b["variant"] == "friendly") for b in bodies)
    again = await campaigns.create_run_now(conn, "promo")
    await Expander(pool, CONFIG, "w").run_once()
    second = dict(await conn.fetch("SELECT phone, variant FROM messages WHERE run_id = $1", again))
    assert second == first
    report = await reports.runs_report(conn, "promo", run_id)
    assert {r["variant"]: r["recipients"] for r in report.table("variants").dicts()} == counts


async def test_the_winner_is_chosen_on_the_test_and_sent_to_the_rest(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(300)
    await add_contacts(conn, [{"phone": p, "first_name": "Cy"} for p in phones])
    spec = tracked(message=two_variants({"test_share": "30%", "after": "2h", "by": "clicks"}))
    run_id = await fire_and_expand(conn, pool, spec, CONFIG)
    test = await conn.fetch("SELECT id, variant FROM messages WHERE run_id = $1", run_id)
    assert 50 < len(test) < 130 and {t["variant"] for t in test} == {"short", "friendly"}
    # the test is delivered; every 'friendly' recipient clicks, one 'short' recipient does
    await conn.execute(
        "UPDATE messages SET status = 'delivered', sent_at = now(), delivered_at = now()"
        " WHERE run_id = $1",
        run_id,
    )
    short_one = next(t["id"] for t in test if t["variant"] == "short")
    await conn.execute(
        "INSERT INTO link_clicks (code, run_id, message_id, clicked_at, agent)"
        " SELECT l.code, l.run_id, m.id, now(), 'human' FROM link_codes l"
        " JOIN messages m ON m.run_id = l.run_id AND m.phone = l.phone"
        " WHERE l.run_id = $1 AND (m.variant = 'friendly' OR m.id = $2)",
        run_id,
        short_one,
    )
    # not due yet: nothing decided, and the run cannot complete meanwhile
    assert await winner.decide_due(pool, datetime.now(UTC)) == []
    await scheduler.complete_runs(conn, timedelta(0))
    assert await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id) == (
        "sending"
    )
    later = datetime.now(UTC) + timedelta(hours=2, minutes=1)
    assert await winner.decide_due(pool, later) == [(run_id, "friendly")]
    decided = await conn.fetchrow("SELECT * FROM ab_tests WHERE run_id = $1", run_id)
    assert decided["winner"] == "friendly" and decided["figures"]["by"] == "clicks"
    assert decided["figures"]["variants"]["friendly"]["click_through_rate"] == 1.0
    result = await Expander(pool, CONFIG, "w").run_once()
    assert result is not None and result.run_id == run_id and result.status is RunStatus.SENDING
    rows = await conn.fetch("SELECT phone, variant FROM messages WHERE run_id = $1", run_id)
    assert sorted(r["phone"] for r in rows) == sorted(phones)
    rest = Counter(r["variant"] for r in rows) - Counter(t["variant"] for t in test)
    assert set(rest) == {"friendly"} and rest["friendly"] == 300 - len(test)
    report = await reports.runs_report(conn, "promo", run_id)
    won = report.table("winner").dicts()[0]
    assert (won["winner"], won["by"], won["rate"]) == ("friendly", "clicks", 1.0)
    page = await reports.report_html(conn, "promo", run_id)
    assert "<h2>A/B winner</h2>" in page and "<td>friendly</td>" in page


async def test_a_test_share_with_nobody_in_it_still_sends_the_rest(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    phones = numbers(3)
    await add_contacts(conn, [{"phone": p} for p in phones])
    spec = tracked(message=two_variants({"test_share": 0.001, "after": "1m", "by": "clicks"}))
    run_id = await fire_and_expand(conn, pool, spec, CONFIG)
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run_id) == 0
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert await winner.decide_due(pool, later) == [(run_id, "short")]  # no figures: the first
    result = await Expander(pool, CONFIG, "w").run_once()
    assert result is not None and result.status is RunStatus.SENDING
    rows = await conn.fetch("SELECT variant FROM messages WHERE run_id = $1", run_id)
    assert [r["variant"] for r in rows] == ["short"] * 3
