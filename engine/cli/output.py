"""How commands print: aligned text tables whose cells show untrusted text safely."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine.untrusted import printable


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table (control characters shown as escapes)."""
    cells = [[printable(cell(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    """One value as a table shows it: '-' for none, times in the local zone it names."""
    if value is None:
        return "-"
    if isinstance(value, datetime):  # in the local zone, which the cell names
        return value.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)
