"""Contacts, groups, archive and preview commands, run through ``engine.cli.main`` as a
user types them: captured stdout/stderr, exit codes, and a fake stdin for confirmation."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import db, scheduler
from engine.cli import main

ANN, BOB, CY, DEE = "+27821000001", "+27821000002", "+27821000003", "+34612345678"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Stdin(io.StringIO):
    """What the user types, on a terminal or not."""

    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


Run = Callable[..., Result]


@pytest.fixture
def engine(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``engine("contacts", "list", stdin="y\\n", tty=True)``: one command's result."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str, stdin: str = "", tty: bool = False) -> Result:
        monkeypatch.setattr("sys.stdin", Stdin(stdin, tty))
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def sql(url: str, query: str, *args: Any) -> Any:
    """One value from the test's database (outside the command under test)."""

    async def fetch() -> Any:
        conn = await db.connect(url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.fixture
def people(engine: Run, tmp_path: Path) -> Run:
    """Four contacts: Ann, Bob (vip), Cy, and Dee (Spanish); Ann is gold."""
    (tmp_path / "vip.csv").write_text(f"phone,first_name,tier\n{ANN},Ann,gold\n{BOB},Bob,\n")
    (tmp_path / "rest.csv").write_text(f"phone,first_name,locale\n{CY},Cy,\n{DEE},Dee,es\n")
    assert engine("contacts", "import", "vip.csv", "--group", "vip").code == 0
    assert engine("contacts", "import", "rest.csv", "--group", "all").code == 0
    assert engine("contacts", "import", "vip.csv", "--group", "all").code == 0
    return engine


def write_campaign(
    tmp_path: Path,
    name: str = "promo",
    schedule: str = "now: true",
    audience: str = "groups: [all]",
    body: str = "Hi {{ first_name }}",
    extra: str = "",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nprovider: simulator\nschedule:\n  {schedule}\n"
        f'audience:\n  {audience}\nmessage:\n  body: "{body}"\n{extra}'
    )
    return path


# --- contacts list / show / remove ----------------------------------------------------------


def test_contacts_list_masks_numbers_and_filters(people: Run) -> None:
    everyone = people("contacts", "list")
    assert everyone.code == 0
    assert "+27******001" in everyone.out and ANN not in everyone.out
    assert everyone.out.endswith("4 contacts\n")
    gold = people("contacts", "list", "--group", "vip", "--attr", "tier=gold", "--unmasked")
    assert ANN in gold.out and BOB not in gold.out and gold.out.endswith("1 contacts\n")
    spanish = people("contacts", "list", "--attr", "locale=es", "--unmasked")
    assert DEE in spanish.out and CY not in spanish.out
    first = people("contacts", "list", "--limit", "1")
    assert first.out.endswith("1 of 4 contacts shown (--limit N for more)\n")


def test_contacts_list_of_an_unknown_group_is_one_line(people: Run) -> None:
    result = people("contacts", "list", "--group", "nope")
    assert (result.code, result.out) == (1, "")
    assert result.err == "engine: no group named 'nope' (see engine groups list)\n"
    bad = people("contacts", "list", "--attr", "tier")
    assert bad.code == 1 and bad.err == "engine: --attr takes KEY=VALUE, not 'tier'\n"


def test_contacts_show_has_fields_groups_optouts_and_messages(people: Run, tmp_path: Path) -> None:
    assert people("campaign", "apply", str(write_campaign(tmp_path))).code == 0
    assert people("campaign", "test", "promo", "--to", ANN).code == 0
    assert people("contacts", "suppress", ANN, "--reason", "asked").code == 0
    shown = people("contacts", "show", ANN)
    assert shown.code == 0, shown.err
    assert "+27******001" in shown.out and ANN not in shown.out
    assert "name:      Ann" in shown.out and "groups:    all, vip" in shown.out
    assert "  tier: gold" in shown.out
    assert "asked" in shown.out and "cli" in shown.out  # the opt-out, its reason and source
    assert "promo" in shown.out and "test" in shown.out and "queued" in shown.out
    assert ANN in people("contacts", "show", ANN, "--unmasked").out


def test_contacts_show_of_an_unknown_number(people: Run) -> None:
    result = people("contacts", "show", "+27829999999")
    assert result.code == 1 and result.err == "engine: no contact with number +27829999999\n"


def test_removing_a_contact_keeps_its_messages_and_optout(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    people("campaign", "apply", str(write_campaign(tmp_path)))
    assert people("campaign", "test", "promo", "--to", BOB).code == 0
    people("contacts", "suppress", BOB)
    removed = people("contacts", "remove", BOB, "+27829999999", "--yes")
    assert removed.code == 0, removed.err
    assert removed.out == "removed 1 contact(s)\nno contact: +27829999999\n"
    assert sql(database_url, "SELECT count(*) FROM contacts WHERE phone = $1", BOB) == 0
    assert sql(database_url, "SELECT contact_id IS NULL FROM messages WHERE phone = $1", BOB)
    assert sql(database_url, "SELECT count(*) FROM suppressions WHERE phone = $1", BOB) == 1
    assert people("contacts", "list", "--group", "vip").out.endswith("1 contacts\n")


def test_contacts_are_not_removed_under_an_expanding_run(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    people("campaign", "apply", str(write_campaign(tmp_path)))
    people("campaign", "send", "promo")
    sql(database_url, "UPDATE campaign_runs SET status = 'expanding' RETURNING id")
    result = people("contacts", "remove", ANN, "--yes")
    assert result.code == 1 and "is reading its audience" in result.err
    assert sql(database_url, "SELECT count(*) FROM contacts") == 4


def test_removing_the_contacts_of_a_group(people: Run, database_url: str) -> None:
    result = people("contacts", "remove", "--group", "vip", "--yes")
    assert result.code == 0 and result.out == "removed 2 contacts; group 'vip' is now empty\n"
    assert sql(database_url, "SELECT count(*) FROM contacts") == 2
    neither = people("contacts", "remove", "--yes")
    assert neither.code == 1 and neither.err == "engine: give numbers, or --group NAME (not both)\n"


# --- confirmation -------------------------------------------------------------------------


DESTRUCTIVE = [
    ("contacts", "remove", ANN),
    ("contacts", "remove", "--group", "vip"),
    ("groups", "remove-members", "vip", ANN),
    ("groups", "delete", "vip"),
]


def counts(url: str) -> tuple[int, int, int]:
    return (
        sql(url, "SELECT count(*) FROM contacts"),
        sql(url, "SELECT count(*) FROM groups"),
        sql(url, "SELECT count(*) FROM group_members"),
    )


@pytest.mark.parametrize("argv", DESTRUCTIVE, ids=lambda a: " ".join(a[:2]))
def test_without_a_terminal_or_yes_nothing_is_removed(
    people: Run, database_url: str, argv: tuple[str, ...]
) -> None:
    before = counts(database_url)
    result = people(*argv)
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.endswith("Not confirmed: pass --yes (stdin is not a terminal)\n")
    assert counts(database_url) == before


@pytest.mark.parametrize("argv", DESTRUCTIVE, ids=lambda a: " ".join(a[:2]))
def test_a_terminal_is_asked_and_no_keeps_everything(
    people: Run, database_url: str, argv: tuple[str, ...]
) -> None:
    before = counts(database_url)
    declined = people(*argv, stdin="n\n", tty=True)
    assert declined.code == 1 and declined.err == "engine: not confirmed; nothing changed\n"
    assert "[y/N]" in declined.out
    assert counts(database_url) == before
    agreed = people(*argv, stdin="y\n", tty=True)
    assert agreed.code == 0, agreed.err
    assert counts(database_url) != before


# --- groups ---------------------------------------------------------------------------------


def test_remove_members_from_a_file_and_numbers(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    (tmp_path / "leave.csv").write_text(f"name;phone\nAnn;{ANN}\nX;not-a-number\n")
    result = people("groups", "remove-members", "all", "leave.csv", DEE, CY, "--yes")
    assert result.code == 0, result.err
    assert "leave.csv:3: invalid: 'not-a-number'" in result.out
    assert "removed 3 of 3 number(s) from group 'all'" in result.out
    assert people("contacts", "list", "--group", "all", "--unmasked").out.count("+") == 1
    assert sql(database_url, "SELECT count(*) FROM contacts") == 4  # contacts stay
    typo = people("groups", "remove-members", "all", "leave.cvs", "--yes")
    assert typo.code == 1
    assert typo.err == "engine: leave.cvs: no such file, and not a phone number\n"
    unknown = people("groups", "remove-members", "nope", ANN, "--yes")
    assert unknown.code == 1 and "no group named 'nope'" in unknown.err


def test_delete_group_warns_about_campaigns_that_use_it(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    path = write_campaign(
        tmp_path, schedule="cron: '0 9 * * *'", audience="groups: [all]\n  exclude_groups: [vip]"
    )
    people("campaign", "apply", str(path))
    result = people("groups", "delete", "vip", "--yes")
    assert result.code == 0, result.err
    assert (
        "warning: campaign 'promo' uses group 'vip': it will no longer exclude these contacts\n"
    ) in result.out
    assert result.out.endswith("group 'vip' deleted (2 memberships; contacts kept)\n")
    assert sql(database_url, "SELECT count(*) FROM contacts") == 4
    again = people("groups", "delete", "vip", "--yes")
    assert again.code == 1 and again.err == (
        "engine: no group named 'vip' (see engine groups list)\n"
    )


# --- campaign archive ------------------------------------------------------------------------


def fire_due(url: str, when: datetime) -> list[scheduler.Firing]:
    async def fire() -> list[scheduler.Firing]:
        conn = await db.connect(url)
        try:
            return await scheduler.create_due_runs(conn, when, timedelta(days=400))
        finally:
            await conn.close()

    return asyncio.run(fire())


def test_archive_hides_stops_firings_and_apply_brings_it_back(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    path = write_campaign(tmp_path, name="daily", schedule="cron: '0 9 * * *'")
    people("campaign", "apply", str(path))
    refused = people("campaign", "archive", "daily")
    assert refused.code == 1 and "--yes" in refused.err
    declined = people("campaign", "archive", "daily", stdin="\n", tty=True)
    assert declined.code == 1 and "daily" in people("campaign", "list").out
    archived = people("campaign", "archive", "daily", stdin="yes\n", tty=True)
    assert archived.code == 0, archived.err
    assert "? [y/N] daily: archived; hidden from 'engine campaign list'" in archived.out
    assert "daily" not in people("campaign", "list").out
    listed = people("campaign", "list", "--all").out.splitlines()[1].split()
    assert listed[:2] == ["daily", "archived"] and listed[2] == "-"  # no next run
    assert fire_due(database_url, datetime.now(UTC) + timedelta(days=3)) == []
    again = people("campaign", "archive", "daily", "--yes")
    assert again.out == "daily: already archived\n"
    back = people("campaign", "apply", str(path))
    assert back.out.startswith("daily: unarchived, next run ")
    assert "daily" in people("campaign", "list").out
    [firing] = fire_due(database_url, datetime.now(UTC) + timedelta(days=1, minutes=1))
    assert firing.campaign == "daily"


def test_an_unchanged_one_off_that_already_ran_does_not_fire_again(
    people: Run, tmp_path: Path, database_url: str
) -> None:
    path = write_campaign(tmp_path, name="once")
    people("campaign", "apply", str(path))
    assert len(fire_due(database_url, datetime.now(UTC))) == 1
    sql(database_url, "UPDATE campaign_runs SET status = 'completed' RETURNING id")
    assert people("campaign", "archive", "once", "--yes").code == 0
    assert "archived (finished)" in people("campaign", "list", "--all").out
    assert people("campaign", "apply", str(path)).out == "once: unarchived\n"
    assert fire_due(database_url, datetime.now(UTC) + timedelta(days=1)) == []
    assert people("campaign", "list").out.splitlines()[1].split()[:3] == ["once", "finished", "-"]


def test_a_changed_file_unarchives_too(people: Run, tmp_path: Path) -> None:
    path = write_campaign(tmp_path, name="daily", schedule="cron: '0 9 * * *'")
    people("campaign", "apply", str(path))
    people("campaign", "archive", "daily", "--yes")
    write_campaign(tmp_path, name="daily", schedule="cron: '0 9 * * *'", body="Changed")
    assert people("campaign", "apply", str(path)).out.startswith("daily: updated, unarchived")


def test_archive_refuses_a_campaign_with_a_run_in_progress(people: Run, tmp_path: Path) -> None:
    people("campaign", "apply", str(write_campaign(tmp_path)))
    people("campaign", "send", "promo")
    result = people("campaign", "archive", "promo", "--yes")
    assert result.code == 1 and "in progress (scheduled)" in result.err
    unknown = people("campaign", "archive", "nope", "--yes")
    assert unknown.code == 1
    assert unknown.err == "engine: no campaign named 'nope' (apply its file first)\n"


# --- preview -----------------------------------------------------------------------------------


def test_preview_shows_each_locale_encoding_the_longest_and_the_skipped(
    people: Run, tmp_path: Path
) -> None:
    # 30 plain contacts first, so the first samples show neither Spanish nor UCS-2
    rows = "".join(f"+2782200{i:04d},P{i}\n" for i in range(1, 31))
    (tmp_path / "many.csv").write_text("phone,first_name\n" + rows)
    (tmp_path / "late.csv").write_text(
        "phone,first_name,locale\n+27823000001,Zoë,\n+27823000002,Eve,es\n"
        f"+27823000003,{'L' * 170},\n+27823000004,Sam,\n"
    )
    people("contacts", "import", "many.csv", "--group", "promo")
    people("contacts", "import", "late.csv", "--group", "promo")
    people("contacts", "suppress", "+27823000004", "--reason", "stop")
    (tmp_path / "file.csv").write_text("phone\nnot-a-number\n")
    path = write_campaign(
        tmp_path,
        audience="groups: [promo]\n  file: file.csv",
        body="Hi {{ first_name }}",
        extra='  locales:\n    es: "Hola {{ first_name }}"\n',
    )
    result = people("campaign", "preview", str(path), "--limit", "2")
    assert result.code == 0, result.err
    out = result.out
    locales = out.split("\none per locale:\n")[1].split("\n\n")[0]
    assert "[es]" in locales and "    Hola Eve" in locales and "[default]" in locales
    encodings = out.split("\none per encoding:\n")[1].split("\n\n")[0]
    assert "GSM-7" in encodings and "UCS-2" in encodings and "    Hi Zoë" in encodings
    longest = out.split("\nlongest message:\n")[1].split("\n\n")[0]
    assert "2 seg" in longest and "L" * 170 in longest
    skipped = out.split("\nskipped (2 of 2 shown):\n")[1]
    assert "+27******004  suppressed: opted out" in skipped
    assert "invalid_number: file line 2: " in skipped
    assert "Hola" not in out.split("\none per locale:\n")[0]  # not among the first samples
