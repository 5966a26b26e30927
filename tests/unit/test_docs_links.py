"""The documentation holds together: every relative link and ``#anchor`` in README.md and
docs/*.md resolves, no link leaves the repository, and the front page leads to each page.

Anchors are GitHub's: a heading lower-cased, stripped of everything but letters, digits,
spaces, ``-`` and ``_``, spaces turned into ``-``; a repeated heading gets ``-1``, ``-2``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = ("marketers.md", "ops.md", "analysts.md", "reference.md")
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")


def doc_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor the headings of ``path`` define."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link target written in ``path``'s prose (inline and reference definitions)."""
    found: list[str] = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found += _LINK.findall(line)
        if definition := _REFERENCE_DEF.match(line):
            found.append(definition.group(1))
    return found


def problems_in(path: Path, root: Path = REPO) -> list[str]:
    """What is wrong with the links of one file of the repository at ``root``."""
    problems = []
    for target in links(path):
        where = f"{path.relative_to(root)}: ({target})"
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            problems.append(f"{where}: links outside the repository")
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
        elif not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and (linked.suffix != ".md" or unquote(anchor) not in anchors(linked)):
            problems.append(f"{where}: no heading with the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(path: Path) -> None:
    assert problems_in(path) == []


def test_the_front_page_links_to_a_page_per_reader() -> None:
    targets = {target.partition("#")[0] for target in links(REPO / "README.md")}
    for page in PAGES:
        assert (REPO / "docs" / page).is_file(), page
        assert f"docs/{page}" in targets, f"README.md does not link to docs/{page}"


def test_the_checker_catches_broken_links(tmp_path: Path) -> None:
    page = REPO / "docs" / "ops.md"
    assert "security-model" in anchors(page)
    assert "configuration-engineyaml" in anchors(page)
    assert slug("Running the engine: `engine run`") == "running-the-engine-engine-run"
    assert slug("SQL: the views (migration `0005_reports.sql`)") == (
        "sql-the-views-migration-0005_reportssql"
    )
    assert "docs/ops.md" in links(REPO / "README.md") or any(
        target.startswith("docs/ops.md") for target in links(REPO / "README.md")
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ops.md").write_text("# Ops\n\n## Security model\n", encoding="utf-8")
    probe = tmp_path / "docs" / "probe.md"
    probe.write_text(
        "# Probe\n\n[ok](ops.md#security-model) [a](ops.md#no-such-heading) [b](missing.md)"
        " [c](https://example.com) [d](../../outside.md) `[e](missing-in-code.md)`\n\n"
        "```\n[f](missing-in-fence.md)\n```\n",
        encoding="utf-8",
    )
    found = problems_in(probe, tmp_path)
    assert len(found) == 4, found
    assert any("#no-such-heading" in p for p in found)
    assert any("no such file" in p for p in found)
    assert any("links outside" in p for p in found)
    assert any("points outside" in p for p in found)
