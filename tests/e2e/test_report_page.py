"""The chart page in a real browser: Debian's chromium, headless, with no network.

The page records on <body> how many charts it found and how many drew at a non-zero size
(``data-charts``, ``data-rendered``) and any script error (``data-js-error``); the DOM
chromium dumps after loading shows them, and its console log (``--enable-logging``) shows
uncaught errors too. A screenshot is decoded to check the funnel's colours are on it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import report_charts, reports
from engine.queries import QUERIES
from engine.report_charts import Series, Timeline
from engine.report_svg import timeline_svg
from tests.integration.test_reports import T0, add_campaign, add_run, build_world

CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name))
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)

#: the funnel's bar colours (recipients, queued, sent, delivered), as drawn by report_page
FUNNEL_COLOURS = ((0x64, 0x74, 0x8B), (0x63, 0x66, 0xF1), (0x3B, 0x82, 0xF6), (0x16, 0xA3, 0x4A))


@pytest.fixture
async def page(conn: asyncpg.Connection, tmp_path: Path) -> Path:
    """The chart page of the realistic run, written to a file."""
    await build_world(conn)
    path = tmp_path / "spring-sale.html"
    path.write_text(await reports.report_html(conn, "spring-sale"), encoding="utf-8")
    return path


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless chromium on ``page`` with networking off; stdout and stderr as text."""
    assert CHROMIUM is not None
    profile = page.parent / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,2000",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@needs_chromium
def test_page_loads_without_errors_and_every_chart_draws(page: Path) -> None:
    assert_every_chart_draws(page)


def assert_every_chart_draws(page: Path) -> None:
    result = chromium(page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = body_attributes(result.stdout)
    assert "data-js-error" not in body
    assert body["data-charts"] == "4" and body["data-rendered"] == "4"
    sizes = re.findall(
        r'<svg class="chart" id="([\w-]+)"[^>]*data-size="(\d+)x(\d+)"', result.stdout
    )
    assert {name for name, _, _ in sizes} == {
        "funnel-chart",
        "timeline-chart",
        "latency-chart",
        "failures-chart",
    }
    assert all(int(w) > 500 and int(h) > 50 for _, w, h in sizes), sizes
    assert console_errors(result.stderr) == []


@needs_chromium
def test_a_script_error_would_be_seen(page: Path) -> None:
    """The checks above can fail: a page with a broken script is caught both ways."""
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("</body>", "<script>nope();</script></body>"))
    result = chromium(broken, "--dump-dom")
    assert body_attributes(result.stdout)["data-js-error"].startswith("Uncaught ReferenceError")
    assert any("nope is not defined" in line for line in console_errors(result.stderr))


@needs_chromium
def test_screenshot_shows_the_charts(page: Path) -> None:
    shot = page.with_name("page.png")
    result = chromium(page, f"--screenshot={shot}", "--hide-scrollbars")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000  # a blank page is a few KB
    width, rows = png_rows(shot, 800)
    assert width == 1200
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), 4)}
    assert len(colours) > 50  # text, bars and backgrounds, not a single colour
    for rgb in FUNNEL_COLOURS:
        assert any(all(abs(a - b) <= 8 for a, b in zip(c, rgb, strict=True)) for c in colours), rgb


def png_rows(path: Path, count: int) -> tuple[int, list[bytes]]:
    """The width and the first ``count`` rows (RGBA) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    width = height = colour_type = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour_type in (2, 6)
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    size = 3 if colour_type == 2 else 4
    stride = width * size
    previous, rows = bytearray(stride), []
    for y in range(min(count, height)):
        start = y * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, size)
        rows.append(bytes(line) if size == 4 else _rgba(line))
        previous = line
    return width, rows


def unfilter(kind: int, line: bytearray, previous: bytearray, size: int) -> bytearray:
    """Undo one PNG scanline filter (None, Sub, Up, Average, Paeth)."""
    for i in range(len(line)):
        left = line[i - size] if i >= size else 0
        up = previous[i]
        corner = previous[i - size] if i >= size else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            line[i] = (line[i] + paeth(left, up, corner)) & 0xFF
    return line


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _rgba(line: bytearray) -> bytes:
    return b"".join(bytes(line[i : i + 3]) + b"\xff" for i in range(0, len(line), 3))


# --- a one-minute SMS run: no read step, a timeline in seconds -----------------------------


async def one_minute_run(conn: asyncpg.Connection, channel: str = "sms", read: int = 0) -> int:
    """60 messages sent one a second from T0, each delivered 2 s later; ``read`` of them read."""
    run_id = await add_run(conn, await add_campaign(conn, "flash"), T0, recipients=60)
    rows = []
    for i in range(60):
        sent = T0 + timedelta(seconds=i)
        is_read = i < read
        rows.append(
            (
                run_id,
                f"+2782{1000000 + i:07d}",
                channel,
                "zc-main",
                "read" if is_read else "delivered",
                1,
                sent,
                sent + timedelta(seconds=2),
                sent + timedelta(seconds=30) if is_read else None,
                f"pm-{i}",
                "GSM-7",
                "Hi",
            )
        )
    await conn.copy_records_to_table(
        "messages",
        records=rows,
        columns=(
            "run_id",
            "phone",
            "channel",
            "account",
            "status",
            "segments",
            "sent_at",
            "delivered_at",
            "read_at",
            "provider_message_id",
            "encoding",
            "body",
        ),
    )
    return run_id


def funnel_labels(html: str) -> list[str]:
    """The step labels drawn in the funnel chart, top to bottom."""
    chart = html.split('id="funnel-chart"', 1)[1].split("</svg>", 1)[0]
    return re.findall(r'class="label"[^>]*>([^<]+)<', chart)


async def test_sms_funnel_ends_at_delivered(conn: asyncpg.Connection) -> None:
    await one_minute_run(conn)
    html = await reports.report_html(conn, "flash")
    assert funnel_labels(html) == ["recipients", "queued", "sent", "delivered"]
    assert "lost before read" not in html and "no read receipt" not in html


async def test_a_channel_with_read_receipts_keeps_the_read_step(conn: asyncpg.Connection) -> None:
    await one_minute_run(conn, channel="whatsapp", read=15)
    html = await reports.report_html(conn, "flash")
    assert funnel_labels(html) == ["recipients", "queued", "sent", "delivered", "read"]
    assert "45 lost before read: 45 no read receipt" in html


def test_the_read_step_follows_the_channel_or_a_read_message() -> None:
    assert not report_charts.has_read_receipts({"sms"}, {"delivered": 5})
    assert not report_charts.has_read_receipts(set(), {})
    assert report_charts.has_read_receipts({"sms", "whatsapp"}, {"delivered": 5})
    assert report_charts.has_read_receipts({"sms"}, {"read": 1})  # reported read: shown, not hidden


async def test_one_minute_run_is_drawn_per_second(conn: asyncpg.Connection) -> None:
    run_id = await one_minute_run(conn)
    minutes = await conn.fetch(QUERIES["report_timeline"], run_id)
    assert report_charts.timeline_step(minutes) == 1
    rows = await conn.fetch(
        QUERIES["report_timeline_fine"], run_id, timedelta(seconds=1), min(r["at"] for r in minutes)
    )
    line = report_charts.timeline(rows, 1)
    assert line is not None
    assert (line.start, line.bucket) == (T0, timedelta(seconds=1))
    # sends at 0..59 s, deliveries at 2..61 s: 62 one-second buckets
    assert {s.name: s.counts for s in line.series} == {
        "sent": (1,) * 60 + (0, 0),
        "delivered": (0, 0) + (1,) * 60,
    }
    html = await reports.report_html(conn, "flash")
    timeline = html.split('id="timeline-chart"', 1)[1].split("</svg>", 1)[0]
    assert "messages per second" in timeline
    assert ">09:00:00<" in timeline and ">09:01:01<" in timeline
    lines = re.findall(r'<polyline[^>]*points="([^"]*)"', timeline)
    assert [len(points.split()) for points in lines] == [62, 62]


def minute_rows(minutes: int) -> list[dict[str, Any]]:
    return [{"kind": "sent", "at": T0 + timedelta(minutes=m), "messages": 1}
            for m in range(minutes)]  # fmt: skip


@pytest.mark.parametrize(
    ("minutes", "seconds"),
    [(1, 1), (2, 1), (3, 1), (5, 2), (10, 5), (60, 30), (90, 30), (91, 60), (600, 300),
     (3 * 1440, 1800)],
)  # fmt: skip
def test_bucket_size_follows_the_duration(minutes: int, seconds: int) -> None:
    assert report_charts.timeline_step(minute_rows(minutes)) == seconds
    line = report_charts.timeline(minute_rows(minutes))
    assert line is not None and line.bucket == timedelta(seconds=max(seconds, 60))
    assert len(line.series[0].counts) <= report_charts.TIMELINE_BUCKETS


@pytest.mark.parametrize(
    ("bucket", "caption", "tick"),
    [
        (timedelta(seconds=1), "messages per second", ">09:00:02<"),
        (timedelta(seconds=5), "messages per 5 seconds", ">09:00:10<"),
        (timedelta(minutes=1), "messages per minute", ">09:02<"),
        (timedelta(minutes=30), "messages per 30 minutes", ">10:00<"),
        (timedelta(hours=2), "messages per 2 hours", ">13:00<"),
    ],
)
def test_timeline_says_its_bucket_size(bucket: timedelta, caption: str, tick: str) -> None:
    svg = timeline_svg(Timeline(T0, bucket, (Series("sent", (1, 2, 3, 4, 5, 6)),)))
    assert caption in svg
    assert tick in svg


@needs_chromium
async def test_one_minute_page_loads_and_every_chart_draws(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await one_minute_run(conn)
    path = tmp_path / "flash.html"
    path.write_text(await reports.report_html(conn, "flash"), encoding="utf-8")
    assert_every_chart_draws(path)
