"""Applying, previewing and test-sending campaigns on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from engine import campaign_preview, campaigns, scheduler
from engine.campaign_loader import load_campaign
from engine.campaigns import CampaignError
from engine.config import EngineConfig
from engine.expander import Expander
from engine.status import MessageStatus, RunStatus
from tests.integration.helpers import add_contacts, campaign, numbers, statuses

CONFIG = EngineConfig()


def write_campaign(tmp_path: Path, body: str = "Hi {{ first_name | default('you') }}") -> Path:
    (tmp_path / "extra.csv").write_text(
        "phone,first_name,tier\n+27825550001,Ann,gold\nnot-a-number,Bob,\n+27825550002,Cy,\n"
    )
    path = tmp_path / "promo.yaml"
    path.write_text(
        "name: promo\nprovider: simulator\nschedule:\n  now: true\n"
        "audience:\n  groups: [all]\n  file: extra.csv\n"
        f'message:\n  body: "{body}"\n'
    )
    return path


async def test_apply_is_idempotent_and_reports_changes(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path)
    first = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    again = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    assert (first.action, again.action) == ("created", "unchanged")
    assert first.file_report is not None
    assert first.file_report.invalid_total == 1
    updated_at = await conn.fetchval("SELECT updated_at FROM campaigns")
    path.write_text(path.read_text().replace("Hi ", "Hello "))
    changed = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    assert changed.action == "updated"
    assert await conn.fetchval("SELECT updated_at FROM campaigns") > updated_at
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 1


async def test_changing_the_audience_file_alone_is_a_change(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path)
    await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    (tmp_path / "extra.csv").write_text("phone\n+27825550003\n")
    changed = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    assert changed.action == "updated"
    members = await conn.fetch(
        "SELECT c.phone FROM group_members m JOIN groups g ON g.id = m.group_id"
        " JOIN contacts c ON c.id = m.contact_id WHERE g.name = 'campaign:promo'"
    )
    assert [r["phone"] for r in members] == ["+27825550003"]
    assert await conn.fetchval("SELECT count(*) FROM campaign_invalid_recipients") == 0


async def test_file_rows_are_recipients_and_invalid_rows_are_recorded(
    conn: asyncpg.Connection, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path, body="Hi {{ first_name }}")
    await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    [firing] = await scheduler.create_due_runs(conn, datetime.now(UTC), timedelta(hours=1))
    assert firing.run_id is not None
    await Expander(pool, CONFIG, "w").run_once()
    assert await statuses(conn, firing.run_id) == {
        "+27825550001": "queued",
        "+27825550002": "queued",
        "not-a-number": "invalid_number",
    }
    detail = await conn.fetchval("SELECT error_detail FROM messages WHERE phone = 'not-a-number'")
    assert detail.startswith("line 3: ")


async def test_a_running_campaign_cannot_be_changed(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path)
    await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    run_id = await campaigns.create_run_now(conn, "promo")
    path.write_text(path.read_text().replace("Hi ", "Yo "))
    with pytest.raises(CampaignError, match=f"has run {run_id} in progress \\(scheduled\\)"):
        await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    await conn.execute("UPDATE campaign_runs SET status = 'completed'")
    changed = await campaigns.apply_campaign(conn, load_campaign(path), path, CONFIG)
    assert changed.action == "updated"


async def test_preview_counts_every_outcome_and_rolls_back(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ok, gone, long_ = numbers(3)
    await add_contacts(
        conn,
        [
            {"phone": ok, "first_name": "Zoë"},
            {"phone": gone},
            {"phone": long_, "first_name": "x" * 200},
        ],
    )
    await conn.execute("INSERT INTO suppressions (phone, source) VALUES ($1, 't')", gone)
    body = "Hi {{ first_name | default('there') }} — ready?"
    spec_ = campaign(message={"body": body, "max_segments": 2}, limits={"budget": 1})
    contacts_before = await conn.fetchval("SELECT count(*) FROM contacts")
    preview = await campaign_preview.preview_campaign(conn, spec_, CONFIG, limit=2)
    assert preview.recipients == 3
    assert dict(preview.statuses) == {"queued": 1, "suppressed": 1, "too_long": 1}
    assert preview.cost == Decimal(1)
    assert preview.segments == 1
    assert preview.ucs2_messages == 1
    assert preview.ucs2_chars == {"ë": 1, "—": 1}  # GSM has ä ö ü but not ë
    assert preview.smart_saves == 0  # one UCS-2 segment becomes one GSM-7 segment
    assert [s.phone.startswith("+27") for s in preview.samples] == [True, True]
    assert preview.samples[0].text == "Hi Zoë — ready?"
    assert await conn.fetchval("SELECT count(*) FROM contacts") == contacts_before
    assert await conn.fetchval("SELECT count(*) FROM messages") == 0


async def test_preview_shows_what_smart_encoding_saves(conn: asyncpg.Connection) -> None:
    await add_contacts(conn, [{"phone": p} for p in numbers(2)])
    spec_ = campaign(message={"body": "“" + "a" * 100 + "”"})  # 102 units: 2 UCS-2 segments
    preview = await campaign_preview.preview_campaign(conn, spec_, CONFIG)
    assert preview.segments == 4
    assert preview.smart_saves == 2


async def test_test_send_queues_one_message_in_its_own_run(conn: asyncpg.Connection) -> None:
    await campaigns.apply_campaign(conn, campaign(limits={"budget": 0}), Path("t.yaml"), CONFIG)
    [known] = numbers(1)
    await add_contacts(conn, [{"phone": known, "first_name": "Ann"}], groups=["nobody"])
    sent = await campaigns.create_test_send(conn, "promo", known, CONFIG)
    assert sent.status is MessageStatus.QUEUED
    assert sent.body == "Hi Ann, 20% off"
    stranger = await campaigns.create_test_send(conn, "promo", "+27829999999", CONFIG)
    assert stranger.body == "Hi Test, 20% off"
    run = await conn.fetchrow(
        "SELECT kind, status::text FROM campaign_runs WHERE id = $1", sent.run_id
    )
    assert (run["kind"], run["status"]) == ("test", RunStatus.SENDING.value)
    assert await statuses(conn, sent.run_id) == {known: "queued"}


async def test_test_send_to_an_opted_out_number_is_refused(conn: asyncpg.Connection) -> None:
    await campaigns.apply_campaign(conn, campaign(), Path("t.yaml"), CONFIG)
    await conn.execute("INSERT INTO suppressions (phone, source) VALUES ('+27829999999', 't')")
    with pytest.raises(CampaignError, match="opted out"):
        await campaigns.create_test_send(conn, "promo", "+27829999999", CONFIG)
    assert await conn.fetchval("SELECT count(*) FROM campaign_runs") == 0


async def test_unknown_campaign_is_a_clear_error(conn: asyncpg.Connection) -> None:
    with pytest.raises(CampaignError, match="no campaign named 'nope'"):
        await campaigns.create_run_now(conn, "nope")
