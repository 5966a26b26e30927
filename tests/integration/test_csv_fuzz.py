"""Fuzzing the CSV importer (issue 18): whatever bytes a file holds, the import ends in a
report or in one clean ContactsError line, in bounded time, and never half-writes.

What the importer promises (engine.contacts_import): a file it refuses writes no contact; an
error after some batches keeps those batches. The inputs here fit in one batch, so an
error must leave no contact at all, and a report must match the table exactly.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.contacts_import import ImportReport, import_contacts
from engine.phones import ContactsError

# cells made of what breaks parsers: delimiters, quotes, line ends, NUL, BOM, escapes,
# surrogate-free non-ASCII, and things that look like numbers
_PIECES = st.sampled_from(
    [
        ",",
        ";",
        "\t",
        '"',
        "'",
        "\n",
        "\r",
        "\r\n",
        "\x00",
        "\ufeff",
        "\x1b[31m",
        "=1+2",
        "+27821234567",
        "0821234567",
        "+1 415 555 2671",
        "phone",
        "Phone",
        "first_name",
        "timezone",
        "Africa/Johannesburg",
        "é",
        "名",
        "🙂",
        " ",
        "",
        "x" * 50,
    ]
)
_TEXT = st.lists(_PIECES, max_size=80).map("".join)
_ROWS = st.lists(
    st.tuples(st.sampled_from(["+27821234567", "082 123 4568", "+14155552671", "n/a"]), _TEXT),
    max_size=6,
)
_CSV_BYTES = st.one_of(
    _ROWS.map(
        lambda rows: ("phone,first_name,city\n" + "".join(f"{p},{t}\n" for p, t in rows)).encode()
    ),
    st.binary(max_size=600),
    _TEXT.map(lambda text: text.encode()),
    st.tuples(st.sampled_from(["phone", "phone,first_name,city", "Phone;Locale"]), _TEXT).map(
        lambda parts: f"{parts[0]}\n{parts[1]}".encode()
    ),
    st.tuples(_TEXT, st.binary(max_size=60)).map(
        lambda parts: b"phone\n" + parts[0].encode() + parts[1]
    ),
)


async def outcome(conn: asyncpg.Connection, path: Path) -> ImportReport | ContactsError:
    """The import's report, or the ContactsError it ended with (anything else escapes)."""
    try:
        return await import_contacts(conn, path, group="fuzz", region="ZA")
    except ContactsError as exc:
        return exc


async def _count(conn: asyncpg.Connection, table: str) -> int:
    count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return count


@settings(
    max_examples=100,
    deadline=timedelta(seconds=10),  # a hang, not a speed limit: small inputs take ms
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_CSV_BYTES)
async def test_any_bytes_end_in_a_report_or_one_clean_error_and_never_half_written(
    conn: asyncpg.Connection, tmp_path: Path, data: bytes
) -> None:
    await conn.execute("TRUNCATE contacts, groups CASCADE")
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    report = await outcome(conn, path)
    if isinstance(report, ContactsError):
        assert "\n" not in str(report) and str(report).startswith(str(path))
        assert await _count(conn, "contacts") == 0
        return
    assert isinstance(report, ImportReport)
    assert report.rows == (
        report.imported + report.updated + report.invalid_total + report.duplicates_in_file
    )
    assert report.updated == 0
    assert await _count(conn, "contacts") == report.imported
    assert await _count(conn, "group_members") == report.imported


@pytest.mark.parametrize(
    "data",
    [
        b"phone\n\x00\n+27821234567\n",
        b"\x00\x00\x00",
        b'phone\n"+27821234567\x00',
        b'phone,a\n+27821234567,"\x00""\n\n',
        b"\xff\xfephone\n",
        b"phone\n\xed\xa0\x80\n",  # an encoded surrogate is not UTF-8
    ],
)
async def test_known_hostile_files(conn: asyncpg.Connection, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "hostile.csv"
    path.write_bytes(data)
    report = await outcome(conn, path)
    if isinstance(report, ContactsError):
        assert "\n" not in str(report)
        assert await _count(conn, "contacts") == 0
    else:
        assert await _count(conn, "contacts") == report.imported


async def test_a_stream_with_any_text_is_safe_too(conn: asyncpg.Connection) -> None:
    text = "phone,name\n+27821234567,\ud800\udfff\n+27821234568,ok\x00\n+27821234569,fine\n"
    report = await import_contacts(conn, io.StringIO(text), group=None, region=None)
    assert (report.imported, report.invalid_total) == (1, 2)
