"""The rules for outside text in a CSV cell and on a terminal (issue 18, break 11)."""

from __future__ import annotations

import pytest

from engine.untrusted import csv_cell, printable, printable_lines


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ('+HYPERLINK("http://x")', '\'+HYPERLINK("http://x")'),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1+2", "'\t=1+2"),
        ("\r=1+2", "'\r=1+2"),
        ("-", "'-"),
        ("-1.5", "-1.5"),  # plain numbers stay numbers
        ("+27821234567", "+27821234567"),
        ("-42", "-42"),
        ("1=2", "1=2"),  # only the first character counts
        ("a =1", "a =1"),
        ("", ""),
        ("-1.5\n", "'-1.5\n"),  # not a plain number
    ],
)
def test_csv_cell_prefixes_what_a_spreadsheet_would_run(cell: str, written: str) -> None:
    assert csv_cell(cell) == written


def test_printable_escapes_c0_del_and_c1_and_nothing_else() -> None:
    assert printable("\x1b[31mred\x07\x00\t\n\x7f\x85\x9b2J") == (
        "\\x1b[31mred\\x07\\x00\\x09\\x0a\\x7f\\x85\\x9b2J"
    )
    kept = "Zoë 名 🙂 \u00a0 \u200b =+-@"
    assert printable(kept) == kept
    assert printable_lines("a\x1b\nb\x9b") == "a\\x1b\nb\\x9b"
