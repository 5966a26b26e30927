"""Contacts import (and the groups it fills) on a real PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest

from engine.audience import GroupInfo, list_groups
from engine.contacts_csv import MAX_COLUMNS, MAX_LINE, RowProblem
from engine.contacts_import import MAX_PROBLEMS, import_contacts
from engine.phones import ContactsError


def write(tmp_path: Path, text: str, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


async def contacts(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM contacts ORDER BY phone")
    return {row["phone"]: row for row in rows}


MESSY = (
    "\ufeff Phone ,FIRST_NAME,Last Name,Locale,TimeZone,City, Tier \r\n"  # line 1
    "082 123 4567,Ann,Smith,en-ZA,Africa/Johannesburg,Cape Town,gold\r\n"  # 2
    "not a number,Bob,,,,,\r\n"  # 3: invalid
    "+27 83 555 0000,Carla,,,,Durban,\r\n"  # 4
    "\r\n"  # 5: blank, ignored
    "12,Dee,,,,,\r\n"  # 6: invalid
    "+27821234567,,Jones,,,,silver\r\n"  # 7: same number as line 2
    '0831112222,"Multi\r\nLine",,,,,\r\n'  # 8-9: one row over two lines
    "0000,Eve,,,,,\r\n"  # 10: invalid
    "+1 (415) 555-2671,Fay,,es-MX,America/Los_Angeles,,\r\n"  # 11
    'n/a,"Gus\r\nGus",,,,,\r\n'  # 12-13: invalid, reported at its first line
)


async def test_import_reports_every_row_and_stores_the_valid_ones(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    report = await import_contacts(conn, write(tmp_path, MESSY), group=None, region="ZA")

    assert report.rows == 9
    assert report.imported == 4
    assert report.updated == 0
    assert report.duplicates_in_file == 1
    assert report.group is None
    assert report.invalid == (
        RowProblem(3, "not a number", "not a number"),
        RowProblem(6, "12", "invalid for region ZA (too short)"),
        RowProblem(10, "0000", "invalid for region ZA (too short)"),
        RowProblem(12, "n/a", "not a number"),
    )
    assert report.invalid_total == 4
    assert report.warnings == ()
    assert report.rows == (
        report.imported + report.updated + report.invalid_total + report.duplicates_in_file
    )

    stored = await contacts(conn)
    assert sorted(stored) == ["+14155552671", "+27821234567", "+27831112222", "+27835550000"]
    ann = stored["+27821234567"]  # line 7 applied over line 2: non-empty cells win
    assert (ann["first_name"], ann["last_name"]) == ("Ann", "Jones")
    assert (ann["locale"], ann["timezone"]) == ("en-ZA", "Africa/Johannesburg")
    assert ann["attributes"] == {"city": "Cape Town", "tier": "silver"}
    assert stored["+27835550000"]["attributes"] == {"city": "Durban"}
    assert stored["+27831112222"]["first_name"] == "Multi\r\nLine"
    assert stored["+27831112222"]["attributes"] == {}
    fay = stored["+14155552671"]
    assert (fay["locale"], fay["timezone"]) == ("es-MX", "America/Los_Angeles")


async def test_reimport_updates_in_place_and_merges_attributes(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    first = write(tmp_path, "phone,first_name,city,tier\n+27821234567,Ann,Cape Town,gold\n")
    await import_contacts(conn, first, group=None, region=None)
    before = (await contacts(conn))["+27821234567"]

    second = write(
        tmp_path,
        "phone,first_name,last_name,city,shoe\n082 123 4567,,Smith,Durban,42\n0831112222,Bo,,,\n",
        "second.csv",
    )
    report = await import_contacts(conn, second, group=None, region="ZA")

    assert (report.imported, report.updated, report.duplicates_in_file) == (1, 1, 0)
    stored = await contacts(conn)
    assert len(stored) == 2
    after = stored["+27821234567"]
    assert after["id"] == before["id"]
    assert after["first_name"] == "Ann"  # an empty cell does not erase
    assert after["last_name"] == "Smith"
    assert after["attributes"] == {"city": "Durban", "tier": "gold", "shoe": "42"}
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]


async def test_group_membership_and_counts(conn: asyncpg.Connection, tmp_path: Path) -> None:
    vip = write(tmp_path, "phone\n+27821234567\n+27831112222\n+27835550000\n", "vip.csv")
    staff = write(tmp_path, "phone\n+27821234567\n+14155552671\n", "staff.csv")
    empty = write(tmp_path, "phone,first_name\n", "empty.csv")

    first = await import_contacts(conn, vip, group="vip", region=None)
    await import_contacts(conn, vip, group="vip", region=None)  # again: no double membership
    await import_contacts(conn, staff, group=" staff ", region=None)
    nobody = await import_contacts(conn, empty, group="later", region=None)

    assert first.group == "vip"
    assert (nobody.rows, nobody.group) == (0, "later")
    groups = await list_groups(conn)
    assert [(g.name, g.members) for g in groups] == [("later", 0), ("staff", 2), ("vip", 3)]
    assert all(isinstance(g, GroupInfo) and g.created_at is not None for g in groups)
    members = await conn.fetch(
        "SELECT c.phone FROM group_members m JOIN contacts c ON c.id = m.contact_id "
        "JOIN groups g ON g.id = m.group_id WHERE g.name = 'staff' ORDER BY c.phone"
    )
    assert [m["phone"] for m in members] == ["+14155552671", "+27821234567"]
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 4


async def test_unknown_timezone_is_a_warning_not_a_lost_contact(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    text = "phone,timezone\n+27821234567,Mars/Olympus\n+27831112222,africa/johannesburg\n"
    report = await import_contacts(conn, write(tmp_path, text), group=None, region=None)

    assert report.imported == 2
    assert report.invalid == ()
    assert report.warnings == (
        RowProblem(2, "Mars/Olympus", "unknown timezone; imported without it"),
    )
    assert report.warnings_total == 1
    stored = await contacts(conn)
    assert stored["+27821234567"]["timezone"] is None
    assert stored["+27831112222"]["timezone"] == "Africa/Johannesburg"


async def test_shifted_cells_make_a_row_invalid_but_trailing_empty_cells_do_not(
    conn: asyncpg.Connection,
) -> None:
    text = "phone,first_name\n+27821234567,Ann,,\n+27831112222,Smith, Bob\n"
    report = await import_contacts(conn, io.StringIO(text), group=None, region=None)

    assert report.imported == 1
    assert report.invalid == (
        RowProblem(3, "+27831112222", "3 cells but the header has 2 columns"),
    )


async def test_semicolons_and_a_text_stream(conn: asyncpg.Connection) -> None:
    text = "Phone;First Name;City\n082 123 4567;Ann;Cape Town, Western Cape\n"
    report = await import_contacts(conn, io.StringIO(text), group=None, region="za")

    assert report.imported == 1
    ann = (await contacts(conn))["+27821234567"]
    assert ann["first_name"] == "Ann"
    assert ann["attributes"] == {"city": "Cape Town, Western Cape"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mobile,name\n0821234567,Ann\n", r"contacts.csv:1: the header needs a 'phone' column"),
        ("phone,Phone\n1,2\n", "contacts.csv:1: column named twice: phone"),
        ("\n\nname,phone\x00x\n", r"contacts.csv:3: column 2 of the header holds '\\x00'"),
        ("", "empty file"),
        ("\n\n", "empty file"),
    ],
)
async def test_unusable_files_are_refused_before_anything_is_written(
    conn: asyncpg.Connection, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ContactsError, match=message):
        await import_contacts(conn, write(tmp_path, text), group="g", region="ZA")
    assert await conn.fetchval("SELECT count(*) FROM groups") == 0


async def test_unknown_region_and_missing_file(conn: asyncpg.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "phone\n0821234567\n")
    with pytest.raises(ContactsError, match="unknown region 'XX'"):
        await import_contacts(conn, path, group=None, region="XX")
    with pytest.raises(ContactsError, match="cannot read"):
        await import_contacts(conn, tmp_path / "nope.csv", group=None, region=None)


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+2782{n:07d}" for n in range(start, start + count)]


async def test_import_larger_than_a_batch_lands_fully(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    phones = numbers(25_000)
    lines = ["phone,batch"] + [f"{p},{i // 10_000}" for i, p in enumerate(phones)]
    lines.insert(20_001, f"{phones[5]},late")  # a repeat that lands in the third batch
    path = write(tmp_path, "\n".join(lines) + "\n")
    done: list[int] = []

    report = await import_contacts(
        conn, path, group="big", region=None, progress=done.append, batch_size=10_000
    )

    assert report.rows == 25_001
    assert (report.imported, report.updated, report.duplicates_in_file) == (25_000, 0, 1)
    assert done == [10_000, 20_000, 25_001]
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 25_000
    assert await conn.fetchval("SELECT min(phone) || max(phone) FROM contacts") == (
        phones[0] + phones[-1]
    )
    late = await conn.fetchval("SELECT attributes FROM contacts WHERE phone = $1", phones[5])
    assert late == {"batch": "late"}
    assert [(g.name, g.members) for g in await list_groups(conn)] == [("big", 25_000)]


async def test_a_failure_mid_file_keeps_the_batches_before_it(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # 3,000 good rows (39 kB, far more than one decoding chunk), then a Latin-1 byte
    good = "".join(f"{p}\n" for p in numbers(3000))
    path = tmp_path / "broken.csv"
    path.write_bytes(b"phone\n" + good.encode() + b"+27821999999,caf\xe9\n")

    with pytest.raises(ContactsError, match="not UTF-8"):
        await import_contacts(conn, path, group=None, region=None, batch_size=1000)

    assert await conn.fetchval("SELECT count(*) FROM contacts") == 2000
    assert await conn.fetchval("SELECT to_regclass('audience_import_stage')") is None


async def test_import_inside_the_callers_transaction(conn: asyncpg.Connection) -> None:
    phones = numbers(5)
    text = "phone,n\n" + "".join(f"{p},{i}\n" for i, p in enumerate(phones)) + f"{phones[0]},x\n"
    async with conn.transaction():
        report = await import_contacts(
            conn, io.StringIO(text), group="g", region=None, batch_size=2
        )
    assert (report.imported, report.duplicates_in_file) == (5, 1)
    assert await conn.fetchval("SELECT attributes FROM contacts WHERE phone = $1", phones[0]) == {
        "n": "x"
    }


async def test_only_the_first_invalid_rows_are_kept(conn: asyncpg.Connection) -> None:
    text = "phone\n" + "nope\n" * (MAX_PROBLEMS + 500) + "+27821234567\n"
    report = await import_contacts(conn, io.StringIO(text), group=None, region=None)

    assert len(report.invalid) == MAX_PROBLEMS
    assert report.invalid_total == MAX_PROBLEMS + 500
    assert report.invalid[-1].line == MAX_PROBLEMS + 1
    assert report.imported == 1


# --- hostile files (issue 18, breaks 2, 9 and 10) ---------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [  # what /proc/self/environ looks like to the reader: one line, secrets in its cells
        ("AWS_KEY=wJalrXUtnFEMI\x00HOME=/root\x00TOKEN=hunter2,hunter3", "column 1 of the"),
        ("AWS_KEY=wJalrXUtnFEMI;HOME=/root;TOKEN=hunter2,hunter3", "needs a 'phone' column"),
    ],
)
async def test_a_header_without_phone_echoes_none_of_its_cells(
    conn: asyncpg.Connection, tmp_path: Path, header: str, message: str
) -> None:
    with pytest.raises(ContactsError) as caught:
        await import_contacts(conn, write(tmp_path, header), group=None, region=None)
    text = str(caught.value)
    assert message in text
    assert "hunter" not in text and "wJalr" not in text and "HOME" not in text


async def test_a_header_of_many_columns_is_capped_with_a_clear_error(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    most = ",".join(["phone"] + [f"c{i}" for i in range(MAX_COLUMNS - 1)])
    report = await import_contacts(
        conn, io.StringIO(f"{most}\n+27821234567,x\n"), group=None, region=None
    )
    assert report.imported == 1

    header = ",".join(["phone"] + [f"c{i}" for i in range(40_000)])  # 23 s before the cap
    with pytest.raises(ContactsError) as caught:
        await import_contacts(conn, write(tmp_path, header + "\n1\n"), group="g", region=None)
    assert str(caught.value) == (
        f"{tmp_path / 'contacts.csv'}:1: the header has 40,001 columns; at most 1,000 are allowed"
    )
    assert await conn.fetchval("SELECT count(*) FROM groups") == 0


async def test_a_header_of_many_repeated_columns_is_refused_the_same_way(
    conn: asyncpg.Connection,
) -> None:
    header = "phone" + ",a" * 500_000  # a million ran away before the cap
    with pytest.raises(ContactsError, match="the header has 500,001 columns"):
        await import_contacts(conn, io.StringIO(header + "\n"), group=None, region=None)


async def test_an_overlong_line_or_cell_is_an_error_naming_its_line(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    good = "+27821234567,a\n"
    long_line = "+27831112222" + ",x" * (MAX_LINE // 2) + "\n"
    with pytest.raises(ContactsError) as caught:
        await import_contacts(
            conn, write(tmp_path, "phone,n\n" + good + long_line), group=None, region=None
        )
    assert str(caught.value) == (
        f"{tmp_path / 'contacts.csv'}:3: line longer than {MAX_LINE:,} characters"
    )

    long_cell = '+27831112222,"' + "x\n" * 70_000 + '"\n'
    with pytest.raises(ContactsError, match=r"^<long>:3: a cell longer than [0-9,]+ characters$"):
        await import_contacts(
            conn,
            io.StringIO("phone,n\n" + good + long_cell),
            group=None,
            region=None,
            name="<long>",
        )

    with pytest.raises(ContactsError, match=r"contacts\.csv:1: line longer than"):
        await import_contacts(
            conn, write(tmp_path, "phone" + "x" * MAX_LINE), group=None, region=None
        )
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_row_with_a_nul_is_reported_and_the_rest_imports(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    text = (
        "phone,first_name,city,\n"
        "+27821234567,A\x00nn,Cape Town,\n"  # 2: in a name
        "+27821234568,Bob,Dur\x00ban,\n"  # 3: in an attribute
        "+2782123\x004569,Cy,,\n"  # 4: in the number
        "+27821234570,Dee,,ignored\x00\n"  # 5: in a column without a name
        "+27821234571,Eve,Paarl,\n"  # 6: fine
    )
    report = await import_contacts(conn, write(tmp_path, text), group="g", region=None)

    assert report.invalid == (
        RowProblem(2, "+27821234567", "unstorable character '\\x00' in column first_name"),
        RowProblem(3, "+27821234568", "unstorable character '\\x00' in column city"),
        RowProblem(4, "+2782123\ufffd4569", "unstorable character '\\x00' in column phone"),
        RowProblem(5, "+27821234570", "unstorable character '\\x00' in column 4"),
    )
    assert sorted(await contacts(conn)) == ["+27821234571"]
    assert [(g.name, g.members) for g in await list_groups(conn)] == [("g", 1)]


async def test_a_stream_with_a_lone_surrogate_is_reported_too(conn: asyncpg.Connection) -> None:
    text = "phone,first_name\n+27821234567,\ud800\n+27821234571,Eve\n"
    report = await import_contacts(conn, io.StringIO(text), group=None, region=None)
    assert report.invalid == (
        RowProblem(2, "+27821234567", "unstorable character '\\ud800' in column first_name"),
    )
    assert report.imported == 1
