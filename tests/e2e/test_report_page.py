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
from pathlib import Path

import asyncpg
import pytest

from engine import reports
from tests.integration.test_reports import build_world

CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name))
    ),
    None,
)
pytestmark = pytest.mark.skipif(
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


def test_page_loads_without_errors_and_every_chart_draws(page: Path) -> None:
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


def test_a_script_error_would_be_seen(page: Path) -> None:
    """The checks above can fail: a page with a broken script is caught both ways."""
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("</body>", "<script>nope();</script></body>"))
    result = chromium(broken, "--dump-dom")
    assert body_attributes(result.stdout)["data-js-error"].startswith("Uncaught ReferenceError")
    assert any("nope is not defined" in line for line in console_errors(result.stderr))


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
