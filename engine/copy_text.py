"""Values as PostgreSQL COPY text (the text format's escapes), for the expansion's rows.

Pure; split from :mod:`engine.message_rows` so that module keeps to one concept.
"""

from __future__ import annotations

from typing import Any

#: the characters COPY's text format escapes
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class CopyText:
    """Values as PostgreSQL COPY text, each distinct value formatted once.

    Most values of a run repeat (the rendered bodies, send times, costs), so formatting
    through a bounded cache costs a dict lookup per field instead of asyncpg's binary
    encoding of every value; ``engine.message_rows.RunPlan._line`` goes further and
    reuses whole tails of rows.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.cache: dict[Any, str] = {}
        self.limit = limit

    def field(self, value: Any) -> str:
        """One value as COPY text (``\\N`` for NULL)."""
        if value is None:
            return "\\N"
        if type(value) is int:
            return str(value)
        text = self.cache.get(value)
        if text is None:
            text = str(value).translate(COPY_ESCAPES)
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[value] = text
        return text
