"""Text from outside the engine, made safe to show in a spreadsheet or on a terminal.

Provider error codes and details, provider message ids, webhook payloads and the cells of
a contacts file are written by someone else. Two places would act on them:

- **A spreadsheet** opening a CSV the engine wrote runs a cell that starts with ``=``,
  ``+``, ``-`` or ``@`` as a formula (``=cmd|' /C calc'!A0``, ``+HYPERLINK(...)``), and a
  leading tab or carriage return can hide one. :func:`csv_cell` prefixes such a cell with
  ``'`` (the OWASP advice), so the spreadsheet shows the text instead. A cell that is a
  plain number (``-1.5``, ``+27821234567``: an optional sign, digits, optional decimals)
  is left alone: a spreadsheet reads it as that number and nothing else, so numbers and
  E.164 phone numbers stay what they are. The same rule runs in PostgreSQL for
  ``engine export`` (:data:`FORMULA_START` is a regular expression both understand).
  ``--raw`` turns it off, for a program that reads the CSV.
- **A terminal** acts on control characters: ``ESC [ ...`` recolours, moves the cursor,
  retitles the window or worse, and C1 ``CSI`` (U+009B) does the same on some terminals.
  :func:`printable` writes every C0 control (tab and newline included), DEL and C1
  control as a visible escape (``\\x1b``); every other character is kept.
"""

from __future__ import annotations

import re

#: a cell that starts like a formula and is not a plain number; valid in Python and in
#: PostgreSQL's regular expressions, and zero-width, so "replace with ``'``" prefixes
FORMULA_START = r"^(?=[=+@\t\r-])(?![+-]?[0-9]+(\.[0-9]+)?\Z)"
#: what replaces FORMULA_START's match: the neutralising prefix, or nothing (``--raw``)
PREFIX = "'"

_FORMULA = re.compile(FORMULA_START)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def csv_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows rather than runs."""
    return _FORMULA.sub(PREFIX, text, count=1)


def printable(text: str) -> str:
    """``text`` with its control characters written as visible ``\\xNN`` escapes."""
    return text.translate(_CONTROLS)


def printable_lines(text: str) -> str:
    """:func:`printable` for each line of ``text``, keeping its line breaks."""
    return "\n".join(printable(line) for line in text.split("\n"))
