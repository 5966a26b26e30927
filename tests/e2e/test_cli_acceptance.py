"""The command line as the tested surface: every row of the command table
(docs/reference.md), run as a user runs it, with its main success and its main error (exit
code, stdout, one-line stderr).

Rows already exercised elsewhere are not repeated here; the map (success / error):

- db migrate, db status, db url: test_cli_foundation (migrate, status, url; a bad config
  on db status) / here (unreachable server, unset variable)
- db stop: test_cli_foundation (embedded) / here (nothing running)
- sms analyze: here (text, --json; bad --to, unknown --account); tests/unit/test_sms (--to)
- contacts import, suppress, unsuppress: here
- contacts list, show, remove; groups remove-members, delete; campaign archive, preview
  (success): test_cli_manage
- groups list: here / test_cli_commands (empty embedded database)
- campaign validate, apply, send, runs, test, cancel: here; campaign preview error: here
- campaign list: test_cli_commands (last real run, costs, zones, malformed URL)
- campaign pause, resume: test_cli_commands (pause -> resume -> completion, over budget) /
  here (unknown campaign); all three while a daemon runs: here (slow)
- simulator: here (starts, serves; bad settings) / test_cli_commands (port in use)
- providers subscribe: tests/integration/test_simulator_sunshine (subscribes) / here
  (callback URL to set by hand; unknown account; no public_url)
- run: test_daemon, test_cli_commands (port in use, migrates) / here (--only)
- status: test_cli_commands / here (unmigrated database); with a live daemon: here
- report, export: here (every format, --html, csv contents, --masked; unknown names)
- demo: test_demo, test_daemon
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.cli import build_parser
from engine.simulator import RunningSimulator
from tests.e2e.conftest import SECRET, UNREACHABLE, Cli, Result
from tests.e2e.test_cli_commands import expand_due
from tests.e2e.test_daemon import SETTLED, Engine, assert_once
from tests.integration.helpers import numbers

REPO = Path(__file__).resolve().parents[2]
# The one place the command table is read from (it may move to docs/reference.md).
COMMAND_TABLE = REPO / "docs" / "reference.md"
COMMAND_SECTION = "## Commands"

ANN, BOB, CY, DEE = "+27821000001", "+27821000002", "+27821000003", "+27821000004"


def one_line(result: Result) -> str:
    """The single stderr line of a failed command (asserting that it is one line)."""
    assert result.code != 0, result.out
    assert result.err.count("\n") == 1 and result.err.startswith("engine: "), result.err
    assert "Traceback" not in result.err
    return result.err.removeprefix("engine: ").rstrip("\n")


# --- the command table (docs/reference.md) against the parser ---------------------------


def parser_commands() -> dict[str, argparse.ArgumentParser]:
    """Every command ``engine --help`` leads to ("campaign test", "run", ...)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            found[" ".join(path)] = parser
        for group in groups:
            for name, sub in group.choices.items():
                walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


def table_rows() -> list[str]:
    """The first cell (the command's synopsis, without `engine`) of each row."""
    text = COMMAND_TABLE.read_text(encoding="utf-8")
    assert COMMAND_SECTION in text, f"no {COMMAND_SECTION!r} in {COMMAND_TABLE}"
    level = COMMAND_SECTION.split()[0]
    section = text.split(COMMAND_SECTION + "\n", 1)[1]
    section = re.split(rf"^#{{1,{len(level)}}} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    rows = re.findall(r"^\|\s*`engine ([^`]*)`", section, flags=re.MULTILINE)
    assert rows, f"no command rows under {COMMAND_SECTION!r}"
    return [row.replace("\\|", "|") for row in rows]


def row_commands(synopsis: str) -> list[str]:
    """The commands a synopsis names: `campaign pause|resume|cancel NAME` names three."""
    words = list(
        itertools.takewhile(
            lambda w: re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", w), synopsis.split()
        )
    )
    return [" ".join(c) for c in itertools.product(*(w.split("|") for w in words))]


def test_every_command_has_a_row_and_every_row_is_a_command() -> None:
    commands = parser_commands()
    documented = {c: row for row in table_rows() for c in row_commands(row)}
    no_row = sorted(set(commands) - set(documented))
    no_command = sorted(set(documented) - set(commands))
    assert (no_row, no_command) == ([], []), "commands with no row, rows with no command"


def test_a_row_names_every_option_of_its_commands_and_no_other() -> None:
    commands = parser_commands()
    unknown, undocumented = [], []
    for row in table_rows():
        named = set(re.findall(r"--[a-z][a-z-]*", row))
        for command in row_commands(row):
            if command not in commands:
                continue  # reported by the test above
            known = {
                o
                for a in commands[command]._actions
                for o in a.option_strings
                if o.startswith("--") and o != "--help"
            }
            unknown += [f"{command} {o}" for o in sorted(named - known)]
            undocumented += [f"{command} {o}" for o in sorted(known - named)]
    assert (unknown, undocumented) == ([], []), "options no command has, options no row names"


def test_the_row_reader_sees_alternatives_and_stops_at_arguments() -> None:
    assert row_commands("campaign pause|resume|cancel NAME") == [
        "campaign pause",
        "campaign resume",
        "campaign cancel",
    ]
    assert row_commands("contacts remove NUMBER…|--group NAME [--yes]") == ["contacts remove"]
    assert row_commands("report [NAME] [--run ID]") == ["report"]


# --- db -------------------------------------------------------------------------------


def test_db_migrate_on_an_unreachable_server_is_one_line(cli_offline: Cli) -> None:
    result = cli_offline("db", "migrate")
    assert one_line(result).startswith(f"cannot connect to PostgreSQL at {UNREACHABLE}: ")
    assert result.out == ""


def test_db_url_with_an_unset_variable_is_one_line(cli_offline: Cli, project: Path) -> None:
    (project / "engine.yaml").write_text("database_url: ${NOPE_DB}\n")
    result = cli_offline("db", "url")
    assert one_line(result) == (
        "engine.yaml:1:15: database_url: environment variable NOPE_DB is not set"
    )


def test_db_stop_with_nothing_running_says_so(cli_offline: Cli, project: Path) -> None:
    result = cli_offline("db", "stop")
    assert (result.code, result.out, result.err) == (0, "embedded PostgreSQL is not running\n", "")
    assert not (project / ".engine").exists()  # nothing was created or started


# --- sms analyze ----------------------------------------------------------------------


def test_sms_analyze_text_and_json_say_the_same(cli_offline: Cli) -> None:
    text = "Price — " + "a" * 63  # one dash away from a single GSM-7 part
    shown = cli_offline("sms", "analyze", text)
    assert (shown.code, shown.err) == (0, "")
    assert shown.out.splitlines() == [
        "encoding: UCS-2",
        "units:    71 UTF-16 code units",
        "segments: 2",
        f"  part 1: {text[:67]!r}",
        f"  part 2: {text[67:]!r}",
        "UCS-2 because of: '—' (U+2014) at 6",
        "with encoding: smart: 1 segments (1 saved)",
    ]
    as_json = cli_offline("sms", "analyze", text, "--json")
    assert (as_json.code, as_json.err) == (0, "")
    assert json.loads(as_json.out) == {
        "encoding": "UCS-2",
        "units": 71,
        "segments": 2,
        "parts": [text[:67], text[67:]],
        "non_gsm": [{"index": 6, "char": "—", "codepoint": "U+2014"}],
        "replacements": [],
        "smart_segments": 1,
    }
    smart = json.loads(cli_offline("sms", "analyze", text, "--smart", "--json").out)
    assert (smart["encoding"], smart["segments"]) == ("GSM-7", 1)
    assert smart["replacements"] == [{"from": "—", "to": "-", "count": 1}]


def test_sms_analyze_errors_are_one_line(cli_offline: Cli) -> None:
    assert one_line(cli_offline("sms", "analyze", "hi", "--to", "123")) == (
        "not a valid phone number: '123'"
    )
    assert one_line(cli_offline("sms", "analyze", "hi", "--to", ANN, "--account", "nope")) == (
        "no provider account 'nope' in the configuration"
    )
    # pricing options without a number would be silently ignored: say so instead
    for option in (["--account", "simulator"], ["--region", "ZA"]):
        assert one_line(cli_offline("sms", "analyze", "hi", *option)) == (
            "--account and --region apply only with --to NUMBER (the number to price)"
        )


# --- contacts and groups ---------------------------------------------------------------


def people(cli: Cli, project: Path) -> None:
    """Ann, Bob and Cy in group 'all'; Ann and Dee in 'vip'."""
    (project / "all.csv").write_text(
        f"phone,first_name\n{ANN},Ann\n{BOB},Bob\nnot-a-number,X\n{CY},Cy\n{BOB},Bob\n"
    )
    (project / "vip.csv").write_text(f"phone,first_name\n{ANN},Ann\n{DEE},Dee\n")
    assert cli("contacts", "import", "all.csv", "--group", "all").code == 0
    assert cli("contacts", "import", "vip.csv", "--group", "vip").code == 0


def test_contacts_import_reports_its_rows_and_groups_list_counts_them(
    cli: Cli, project: Path
) -> None:
    (project / "all.csv").write_text(
        f"phone,first_name\n{ANN},Ann\n{BOB},Bob\nnot-a-number,X\n{CY},Cy\n{BOB},Bob\n"
    )
    result = cli("contacts", "import", "all.csv", "--group", "all")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines()[0] == (
        "5 rows: 3 new, 0 updated, 1 invalid, 1 repeated in the file; group all"
    )
    assert "all.csv:4: invalid: 'not-a-number'" in result.out
    (project / "vip.csv").write_text(f"phone,first_name\n{ANN},Ann\n{DEE},Dee\n")
    again = cli("contacts", "import", "vip.csv", "--group", "vip")
    assert again.out == "2 rows: 1 new, 1 updated, 0 invalid, 0 repeated in the file; group vip\n"
    groups = cli("groups", "list")
    assert groups.code == 0
    assert [line.split()[:2] for line in groups.out.splitlines()] == [
        ["group", "members"],
        ["all", "3"],
        ["vip", "2"],
    ]


def test_contacts_import_errors_are_one_line(cli: Cli, project: Path) -> None:
    assert one_line(cli("contacts", "import", "nope.csv")) == "nope.csv: no such file"
    (project / "tel.csv").write_text("name,tel\nAnn,1\n")
    assert one_line(cli("contacts", "import", "tel.csv")) == (
        "tel.csv:1: the header needs a 'phone' column; none of its 2 columns is named phone"
        " (names ignore case, and spaces become _)"
    )
    assert cli("groups", "list").out.splitlines()[1:] == []  # nothing imported


def test_suppress_and_unsuppress(cli: Cli, project: Path) -> None:
    people(cli, project)
    assert cli("contacts", "suppress", ANN, "--reason", "asked").out == f"{ANN} suppressed\n"
    assert cli("contacts", "suppress", ANN).out == f"{ANN} was already suppressed\n"
    assert cli("contacts", "suppress", "082 100 0002", "--region", "ZA").out == (
        f"{BOB} suppressed\n"
    )
    listed = cli("contacts", "list", "--unmasked").out
    opted = [line.split()[0] for line in listed.splitlines()[1:-1] if line.endswith("yes")]
    assert opted == [ANN, BOB], listed
    assert cli("contacts", "unsuppress", ANN).out == f"{ANN} unsuppressed\n"
    assert cli("contacts", "unsuppress", ANN).out == f"{ANN} was not suppressed\n"
    listed = cli("contacts", "list", "--unmasked").out
    assert [line.split()[0] for line in listed.splitlines()[1:-1] if line.endswith("yes")] == [BOB]
    for command in ("suppress", "unsuppress"):
        assert one_line(cli("contacts", command, "nonsense")) == (
            "not a valid phone number: 'nonsense'"
        )


# --- campaign files --------------------------------------------------------------------


def write_campaign(
    path: Path,
    name: str = "promo",
    *,
    group: str = "all",
    schedule: str = 'cron: "0 9 * * *"',
    provider: str = "simulator",
    body: str = "Hi {{ first_name }}",
) -> Path:
    path.write_text(
        f"name: {name}\nprovider: {provider}\nschedule:\n  {schedule}\n"
        f'audience:\n  groups: [{group}]\nmessage:\n  body: "{body}"\n'
    )
    return path


def write_bad_campaign(path: Path) -> Path:
    path.write_text(
        "name: bad\nprovider: simulator\nschedule:\n  now: true\n"
        'audience:\n  groups: [all]\nmessage:\n  bodyy: "Hi"\n'
    )
    return path


def test_validate_a_good_and_a_bad_file(cli_offline: Cli, project: Path) -> None:
    good = write_campaign(project / "promo.yaml")
    result = cli_offline("campaign", "validate", str(good))
    assert (result.code, result.out, result.err) == (0, f"{good}: ok (promo)\n", "")
    bad = write_bad_campaign(project / "bad.yaml")
    both = cli_offline("campaign", "validate", "promo.yaml", "bad.yaml")
    assert both.code == 1
    assert both.out == "promo.yaml: ok (promo)\n"
    assert both.err.splitlines() == [
        "bad.yaml:8:3: message.body: required field is missing",
        "bad.yaml:8:3: message.bodyy: unknown field",
    ]
    folder = cli_offline("campaign", "validate", str(project))  # a folder: every file in it
    assert folder.code == 1 and f"{good}: ok (promo)" in folder.out and str(bad) in folder.err
    missing = cli_offline("campaign", "validate", "nope.yaml")
    assert (missing.code, missing.err) == (1, "nope.yaml: no such file or folder\n")


def test_apply_stores_updates_and_applies_nothing_when_a_file_is_bad(
    cli: Cli, project: Path
) -> None:
    good = write_campaign(project / "promo.yaml")
    write_bad_campaign(project / "bad.yaml")
    refused = cli("campaign", "apply", "promo.yaml", "bad.yaml")
    assert refused.code == 1 and refused.out == ""
    assert refused.err.splitlines()[0] == "bad.yaml:8:3: message.body: required field is missing"
    assert cli("campaign", "list").out.splitlines()[1:] == []  # not even the good one
    created = cli("campaign", "apply", str(good))
    assert created.code == 0 and created.out.startswith("promo: created, next run ")
    assert cli("campaign", "apply", str(good)).out == "promo: unchanged\n"
    write_campaign(good, body="Hello {{ first_name }}")
    assert cli("campaign", "apply", str(good)).out.startswith("promo: updated, next run ")
    assert cli("campaign", "list").out.splitlines()[1].split()[:2] == ["promo", "active"]


def test_preview_of_a_bad_file_or_an_unknown_account(cli: Cli, project: Path) -> None:
    write_bad_campaign(project / "bad.yaml")
    bad = cli("campaign", "preview", "bad.yaml")
    assert bad.code == 1 and bad.out == "" and "bad.yaml:8:3: message.bodyy" in bad.err
    write_campaign(project / "promo.yaml", provider="nope")
    unknown = cli("campaign", "preview", "promo.yaml")
    assert unknown.code == 1 and unknown.err.count("\n") == 1
    assert unknown.err.startswith("promo.yaml:2:") and "nope" in unknown.err


# --- send, runs, test send, cancel ----------------------------------------------------------


def test_send_creates_a_run_that_runs_lists(cli: Cli, project: Path) -> None:
    people(cli, project)
    cli("campaign", "apply", str(write_campaign(project / "promo.yaml")))
    sent = cli("campaign", "send", "promo")
    assert (sent.code, sent.err) == (0, "")
    run_id = int(
        re.fullmatch(
            r"run (\d+) of promo created; a running daemon expands and sends"
            r" it\n",
            sent.out,
        )[1]
    )  # type: ignore[index]
    runs = cli("campaign", "runs", "promo")
    assert runs.code == 0
    [row] = runs.out.splitlines()[1:]
    assert row.split()[:2] == [str(run_id), "manual"] and " scheduled " in row
    unknown = "no campaign named 'nope' (apply its file first)"
    assert one_line(cli("campaign", "send", "nope")) == unknown
    assert one_line(cli("campaign", "runs", "nope")) == unknown


def test_test_send_queues_one_message_but_never_to_an_opted_out_number(
    cli: Cli, project: Path
) -> None:
    people(cli, project)
    cli("campaign", "apply", str(write_campaign(project / "promo.yaml")))
    sent = cli("campaign", "test", "promo", "--to", BOB)
    assert (sent.code, sent.err) == (0, "")
    assert re.fullmatch(r"message \d+ \(run \d+\): queued\n    Hi Bob\n", sent.out), sent.out
    [row] = cli("campaign", "runs", "promo").out.splitlines()[1:]
    assert " test " in row and "queued=1" in row
    stranger = cli("campaign", "test", "promo", "--to", "+27829999999")
    assert stranger.code == 0 and stranger.out.endswith("\n    Hi Test\n")
    cli("contacts", "suppress", CY)
    assert one_line(cli("campaign", "test", "promo", "--to", CY)) == (
        f"{CY} has opted out; a test send is not allowed"
    )
    assert one_line(cli("campaign", "test", "promo", "--to", "xx")) == (
        "not a valid phone number: 'xx'"
    )
    assert one_line(cli("campaign", "test", "nope", "--to", BOB)) == (
        "no campaign named 'nope' (apply its file first)"
    )


async def expanded(cli: Cli, project: Path, pool: asyncpg.Pool) -> int:
    """Campaign 'promo' fired and expanded for group 'all' (Ann, Bob, Cy; Cy opted out):
    the run's id, its two messages queued."""
    await asyncio.to_thread(people, cli, project)
    path = write_campaign(project / "promo.yaml", schedule="now: true")
    assert (await asyncio.to_thread(cli, "contacts", "suppress", CY)).code == 0
    assert (await asyncio.to_thread(cli, "campaign", "apply", str(path))).code == 0
    return await expand_due(pool)


async def test_cancel_ends_the_queued_messages_cancelled(
    cli: Cli, project: Path, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    run_id = await expanded(cli, project, pool)
    result = await asyncio.to_thread(cli, "campaign", "cancel", "promo")
    assert (result.code, result.err) == (0, "")
    assert result.out == "promo: cancelled (1 run(s), 2 unsent messages)\n"
    rows = await conn.fetch(
        "SELECT phone, status::text FROM messages WHERE run_id = $1 ORDER BY phone", run_id
    )
    assert [tuple(r) for r in rows] == [(ANN, "cancelled"), (BOB, "cancelled"), (CY, "suppressed")]
    run = await conn.fetchrow(
        "SELECT status::text, reason FROM campaign_runs WHERE id = $1", run_id
    )
    assert run["status"] == "cancelled" and run["reason"].startswith("cancelled by ")
    listed = await asyncio.to_thread(cli, "campaign", "list")
    assert listed.out.splitlines()[1].split()[:3] == ["promo", "cancelled", "-"]


def test_a_cancelled_campaign_is_not_said_to_be_paused_or_resumed(cli: Cli, project: Path) -> None:
    cli("campaign", "apply", str(write_campaign(project / "promo.yaml")))
    assert cli("campaign", "cancel", "promo").out == (
        "promo: cancelled (0 run(s), 0 unsent messages)\n"
    )
    for command in ("pause", "resume"):
        assert one_line(cli("campaign", command, "promo")) == (
            f"promo is cancelled; there is nothing to {command}"
        )
    assert cli("campaign", "list").out.splitlines()[1].split()[:2] == ["promo", "cancelled"]
    # a run asked for by name after the cancel is still controlled, and says so
    cli("campaign", "send", "promo")
    assert cli("campaign", "pause", "promo").out == (
        "promo: 1 run(s) in progress paused; the campaign stays cancelled\n"
    )
    assert cli("campaign", "resume", "promo").out == (
        "promo: 1 run(s) continue; the campaign stays cancelled\n"
    )


async def test_a_finished_one_off_has_nothing_to_pause(
    cli: Cli, project: Path, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    path = write_campaign(project / "once.yaml", "once", schedule="now: true")
    assert (await asyncio.to_thread(cli, "campaign", "apply", str(path))).code == 0
    run_id = await expand_due(pool)  # nobody in its group: the run completes at once
    assert (
        await conn.fetchval("SELECT status::text FROM campaign_runs WHERE id = $1", run_id)
        == "completed"
    )
    for command in ("pause", "resume"):
        assert one_line(await asyncio.to_thread(cli, "campaign", command, "once")) == (
            f"once is finished; there is nothing to {command}"
        )


@pytest.mark.parametrize("command", ["pause", "resume", "cancel"])
def test_control_of_an_unknown_campaign_is_one_line(cli: Cli, command: str) -> None:
    assert one_line(cli("campaign", command, "nope")) == (
        "no campaign named 'nope' (apply its file first)"
    )


# --- report and export -------------------------------------------------------------------


async def test_report_in_every_format(cli: Cli, project: Path, pool: asyncpg.Pool) -> None:
    run_id = await expanded(cli, project, pool)

    async def engine(*argv: str) -> Result:
        result = await asyncio.to_thread(cli, *argv)
        assert (result.code, result.err) == (0, ""), argv
        return result

    table = (await engine("report")).out
    assert table.startswith("latest run of each campaign\n")
    [header, row] = table.split("\nruns\n")[1].splitlines()
    assert header.split()[:6] == ["campaign", "run", "kind", "status", "scheduled", "recipients"]
    assert row.split()[:4] == ["promo", str(run_id), "scheduled", "sending"]
    latest = list(csv.DictReader((await engine("report", "--format", "csv")).out.splitlines()))
    assert [
        (r["campaign"], r["run_id"], r["recipients"], r["queued"], r["suppressed"]) for r in latest
    ] == [("promo", str(run_id), "3", "2", "1")]
    assert {"estimated_cost", "cost"} <= set(latest[0])
    # a campaign with one run shows that run in detail: five tables
    detail = json.loads((await engine("report", "promo", "--format", "json")).out)
    assert set(detail["tables"]) == {"run", "statuses", "failures", "latency", "accounts"}
    assert detail["tables"]["run"]["run_id"] == run_id
    assert {s["status"]: s["messages"] for s in detail["tables"]["statuses"]} == {
        "queued": 2,
        "suppressed": 1,
    }
    by_id = await engine("report", "--run", str(run_id), "--format", "csv")
    tables = by_id.out.strip("\n").split("\n\n")
    assert len(tables) == 5 and tables[0].startswith("campaign_id,")
    shown = (await engine("report", "promo", "--run", str(run_id))).out
    assert "messages by status" in shown and "cost of accepted messages" in shown
    page = await engine("report", "promo", "--html", "promo.html")
    assert page.out == "wrote promo.html\n"
    html = (project / "promo.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "promo" in html


def test_report_errors_are_one_line(cli: Cli, project: Path) -> None:
    cli("campaign", "apply", str(write_campaign(project / "promo.yaml")))
    assert one_line(cli("report", "nope")) == "no campaign named 'nope'"
    assert one_line(cli("report", "promo", "--run", "999")) == "no run 999"
    assert one_line(cli("report", "--html", "x.html")) == "--html needs a campaign name"
    assert one_line(cli("report", "nope", "--html", "x.html")) == "no campaign named 'nope'"
    assert not (project / "x.html").exists()


async def test_export_writes_one_row_per_recipient_masked_on_request(
    cli: Cli, project: Path, pool: asyncpg.Pool
) -> None:
    run_id = await expanded(cli, project, pool)
    result = await asyncio.to_thread(cli, "export", "promo", "--out", "promo.csv")
    assert (result.code, result.out, result.err) == (0, "wrote 3 rows to promo.csv\n", "")
    with (project / "promo.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["run_id"], r["phone"], r["phone_masked"], r["status"]) for r in rows] == [
        (str(run_id), ANN, "+27******001", "queued"),
        (str(run_id), BOB, "+27******002", "queued"),
        (str(run_id), CY, "+27******003", "suppressed"),
    ]
    masked = await asyncio.to_thread(
        cli, "export", "promo", "--run", str(run_id), "--out", "masked.csv", "--masked"
    )
    assert masked.code == 0
    text = (project / "masked.csv").read_text()
    assert "phone," not in text.splitlines()[0].replace("phone_masked", "")
    assert ANN not in text and BOB not in text and "+27******001" in text


def test_export_errors_are_one_line_and_leave_no_file(cli: Cli, project: Path) -> None:
    cli("campaign", "apply", str(write_campaign(project / "promo.yaml")))
    assert one_line(cli("export", "nope", "--out", "x.csv")) == "no campaign named 'nope'"
    assert one_line(cli("export", "promo", "--run", "999", "--out", "x.csv")) == "no run 999"
    assert one_line(cli("export", "promo", "--out", "missing/x.csv")).startswith(
        "cannot write missing/x.csv"
    )
    assert list(project.glob("x.csv*")) == []


# --- status, run, providers ---------------------------------------------------------------


def test_status_on_an_unmigrated_database_says_to_migrate(
    cli_offline: Cli, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    assert one_line(cli_offline("status")).endswith("has no tables; run `engine db migrate`")


def test_run_with_an_unknown_role_is_one_line(cli_offline: Cli) -> None:
    assert one_line(cli_offline("run", "--only", "scheduler,mailer")) == (
        "--only takes dispatcher, scheduler, webhooks"
    )


def test_providers_subscribe_without_an_api_prints_the_callback_url(
    cli_offline: Cli, project: Path
) -> None:
    sim = (
        "providers:\n  sim:\n    type: simulator\n    base_url: http://127.0.0.1:1\n"
        "    webhook_secret: a-webhook-secret-long-enough\n"
    )
    (project / "engine.yaml").write_text(sim)
    assert one_line(cli_offline("providers", "subscribe", "sim")) == (
        "webhooks.public_url must be set: providers call the engine there"
    )
    assert one_line(cli_offline("providers", "subscribe", "nope")) == (
        "no provider account 'nope' in the configuration"
    )
    (project / "engine.yaml").write_text(
        "webhooks:\n  public_url: https://engine.example.com\n" + sim
    )
    result = cli_offline("providers", "subscribe", "sim")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "https://engine.example.com/webhooks/sim  (sim: this provider has no subscription"
        " API; set this URL as its callback URL in its dashboard)\n"
    )


# --- the simulator ------------------------------------------------------------------------


def engine_process(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def simulator_process(project: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``engine simulator ARGS``; whatever is still running is killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        started.append(engine_process("simulator", *args, cwd=project))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_simulator_starts_serves_and_stops_cleanly_on_a_signal(
    simulator_process: Callable[..., subprocess.Popen[str]], project: Path, signum: int
) -> None:
    (project / "sim.yaml").write_text("seed: 7\ncredit_balance: 250\n")
    proc = simulator_process("--port", "0", "--settings", "sim.yaml")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = re.fullmatch(r"simulator listening on (http://127\.0\.0\.1:\d+) \(stats at \S+\)\n", line)
    assert url is not None, line
    with urllib.request.urlopen(f"{url[1]}/sim/stats", timeout=10) as response:
        stats = json.loads(response.read())
    assert (stats["requests"], stats["messages"]) == (0, 0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "")
    assert "Traceback" not in err and err.count("\n") <= 1, err


def test_simulator_with_bad_settings_is_one_line(
    simulator_process: Callable[..., subprocess.Popen[str]], project: Path
) -> None:
    (project / "sim.yaml").write_text("seed: 7\nfaults: 3\n")
    proc = simulator_process("--settings", "sim.yaml", "--port", "0")
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (1, "engine: sim.yaml:2:1: faults: unknown field\n")
    missing = simulator_process("--settings", "nope.yaml", "--port", "0")
    _, err = missing.communicate(timeout=60)
    assert (missing.returncode, err) == (1, "engine: nope.yaml: no such file\n")


# --- control commands while a daemon runs -------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]], within: float = 10) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds have passed; whether it held."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.mark.slow
async def test_pause_resume_and_cancel_reach_a_running_daemon(
    sim: tuple[RunningSimulator, int],
    cli: Cli,
    project: Path,
    conn: asyncpg.Connection,
    database_url: str,
) -> None:
    simulator, port = sim
    config = project / "engine.yaml"
    config.write_text(
        f"webhooks:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}\n"
        f"providers:\n  sim:\n    type: simulator\n    base_url: {simulator.url}\n"
        f"    rate: 20\n    webhook_secret: {SECRET}\n"
        "lease: 2s\nshutdown_grace: 1s\nreceipt_window: 2s\n"
    )

    async def engine(*argv: str) -> Result:
        result = await asyncio.to_thread(cli, *argv)
        assert (result.code, result.err) == (0, ""), (argv, result)
        return result

    alpha, beta = numbers(80), numbers(80, start=1200001)
    for name, phones in (("alpha", alpha), ("beta", beta)):
        (project / f"{name}.csv").write_text("phone\n" + "\n".join(phones) + "\n")
        await engine("contacts", "import", f"{name}.csv", "--group", name)

    async def count(name: str, statuses: str) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM messages m JOIN campaign_runs r ON r.id = m.run_id"
                " JOIN campaigns c ON c.id = r.campaign_id"
                " WHERE c.name = $1 AND m.status::text = ANY($2::text[])",
                name,
                statuses.split(),
            )
        )

    daemon = Engine(config, database_url)
    await daemon.start()
    try:
        assert await until(lambda: conn.fetchval("SELECT count(*) = 1 FROM workers"), 30)
        shown = (await engine("status")).out.split("runs in progress:")[0]
        assert len([line for line in shown.splitlines()[2:] if line]) == 1, shown  # ours
        for name in ("alpha", "beta"):
            await engine(
                "campaign",
                "apply",
                str(
                    write_campaign(
                        project / f"{name}.yaml",
                        name,
                        group=name,
                        provider="sim",
                        schedule="now: true",
                        body="Hello from " + name,
                    )
                ),
            )
        sent = "sent delivered undelivered failed unknown"
        assert await until(lambda: _all(count("alpha", sent), count("beta", sent), least=5), 30)

        await engine("campaign", "pause", "alpha")
        await engine("campaign", "cancel", "beta")
        # within about a second the daemon stops claiming: in-flight sends settle, then the
        # simulator hears nothing more while both campaigns still had messages to send
        assert await until(lambda: _none(count("alpha", "sending"), count("beta", "sending")))
        heard = simulator.stats.messages
        await asyncio.sleep(1.5)
        assert simulator.stats.messages == heard
        assert await count("alpha", "queued") > 0
        assert await count("beta", "queued") == 0 and await count("beta", "cancelled") > 0
        assert (
            await conn.fetchval(
                "SELECT r.status::text FROM campaign_runs r JOIN campaigns c"
                " ON c.id = r.campaign_id WHERE c.name = 'beta'"
            )
            == "cancelled"
        )

        assert (await engine("campaign", "resume", "alpha")).out == (
            "alpha: resumed (1 run(s) continue)\n"
        )
        assert await until(
            lambda: conn.fetchval(
                "SELECT r.status = 'completed' FROM campaign_runs r JOIN campaigns c"
                " ON c.id = r.campaign_id WHERE c.name = 'alpha'"
            ),
            60,
        )
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0, daemon.stderr[-3000:]
    rows = await conn.fetch("SELECT phone, status::text FROM messages")
    assert {r["status"] for r in rows if r["phone"] in alpha} <= SETTLED - {"cancelled"}
    assert {r["status"] for r in rows if r["phone"] in beta} <= SETTLED
    assert_once(simulator, alpha + beta)


async def _all(*counts: Awaitable[int], least: int) -> bool:
    return all([await c >= least for c in counts])


async def _none(*counts: Awaitable[int]) -> bool:
    return not any([await c for c in counts])
