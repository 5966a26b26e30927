"""Tracked links and A/B variants through the commands a marketer and an analyst type:
validate (file:line:col errors), preview (short sample, what shortening saved), test send
(its link resolves), report and export (clicks per link, variant and recipient)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.test_cli_commands import engine, expand_due
from tests.integration.helpers import add_contacts, numbers

LONG = "https://shop.example.com/collections/spring-sale-2026?ref=sms&campaign=spring"
SALE = "Spring sale, 20% off everything in store and online today only. Shop:"
CAMPAIGN = f"""\
name: promo
provider: simulator
schedule: {{now: true}}
audience: {{groups: [all]}}
links:
  track: true
  base_url: https://s.example.com
  utm: {{source: sms, campaign: "{{{{ campaign }}}}"}}
message:
  variants:
    - name: short
      body: "{SALE} {LONG} Reply STOP to opt out"
    - name: friendly
      body: "Hi {{{{ first_name | default('there') }}}}! Spring sale today: {LONG} Reply STOP"
"""


async def test_validate_names_file_line_and_column_of_each_problem(
    tmp_path: Path, use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: promo\nprovider: simulator\nschedule: {now: true}\naudience: {groups: [all]}\n"
        "links:\n  track: true\n  base_url: ftp://nope\n  utm: {source: '{{ oops'}\n"
        "message:\n  variants:\n    - {name: a, body: hi, weight: -1}\n"
        "  winner: {test_share: 0%, after: 2h, by: opens}\n"
    )
    code, _, err = await engine(capsys, "campaign", "validate", str(path))
    assert code != 0
    assert f"{path}:7:13: links.base_url:" in err
    assert f"{path}:8:17: links.utm.source: template syntax error" in err
    assert f"{path}:11:5: message.variants: give at least two variants" in err
    assert f"{path}:11:35: message.variants.0.weight:" in err
    assert f"{path}:12:24: message.winner.test_share:" in err
    assert f"{path}:12:43: message.winner.by:" in err
    assert err.count("\n") == 6


async def test_preview_report_and_export_show_links_variants_and_clicks(
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_contacts(conn, [{"phone": p, "first_name": "Ann"} for p in numbers(20)])
    path = tmp_path / "promo.yaml"
    path.write_text(CAMPAIGN)
    code, out, err = await engine(capsys, "campaign", "preview", str(path))
    assert code == 0, err
    assert re.search(r"https://s\.example\.com/l/[0-9A-Za-z]{8}", out)
    assert LONG not in out
    saved = re.search(r"short links saved (\d+) segments \((\d+(?:\.\d+)?) credits\)", out)
    assert saved and int(saved[1]) > 0  # the 'short' wording drops from 2 segments to 1
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0
    run_id = await expand_due(pool)
    message_id, code_ = await conn.fetchrow(
        "SELECT m.id, l.code FROM messages m JOIN link_codes l"
        " ON l.run_id = m.run_id AND l.phone = m.phone WHERE m.run_id = $1 LIMIT 1",
        run_id,
    )
    await conn.execute(
        "UPDATE messages SET status = 'delivered', sent_at = now(), delivered_at = now()"
        " WHERE run_id = $1",
        run_id,
    )
    await conn.execute(
        "INSERT INTO link_clicks (code, run_id, message_id, clicked_at, agent)"
        " VALUES ($1, $2, $3, now(), 'human'), ($1, $2, $3, now(), 'human'),"
        " ($1, $2, $3, now(), 'bot')",
        code_,
        run_id,
        message_id,
    )
    code, out, err = await engine(capsys, "report", "promo")
    assert code == 0, err
    assert "tracked links" in out and "A/B variants" in out
    assert "utm_source=sms&utm_campaign=promo" in out
    code, out, err = await engine(capsys, "report", "promo", "--format", "json")
    tables = __import__("json").loads(out)["tables"]
    assert sum(row["clicks"] for row in tables["links"]) == 2
    assert sum(row["bot_clicks"] for row in tables["links"]) == 1
    assert {row["variant"] for row in tables["variants"]} == {"short", "friendly"}
    target = tmp_path / "promo.csv"
    code, _, err = await engine(capsys, "export", "promo", "--out", str(target))
    assert code == 0, err
    with target.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert {"variant", "first_clicked_at", "clicks"} <= set(rows[0])
    clicked = [r for r in rows if r["clicks"] != "0"]
    assert len(clicked) == 1 and clicked[0]["clicks"] == "2" and clicked[0]["first_clicked_at"]
    assert {r["variant"] for r in rows} == {"short", "friendly"}


async def test_a_test_send_gets_a_working_short_link(
    conn: asyncpg.Connection,
    use_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "promo.yaml"
    path.write_text(CAMPAIGN)
    assert (await engine(capsys, "campaign", "apply", str(path)))[0] == 0
    code, out, err = await engine(capsys, "campaign", "test", "promo", "--to", "+27821234567")
    assert code == 0, err
    [short] = re.findall(r"https://s\.example\.com/l/([0-9A-Za-z]{8})", out)
    url = await conn.fetchval("SELECT url FROM link_codes WHERE code = $1", short)
    assert url == LONG + "&utm_source=sms&utm_campaign=promo"
