"""The ``engine`` command line.

Every command is an async function ``(ctx, args) -> int``. Errors the engine raises on
purpose (:class:`engine.errors.EngineError`) print as one line on stderr with a non-zero
exit code; ``--debug`` adds the traceback. Configuration is read once, here, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from pydantic import ValidationError

from engine import (
    __version__,
    audience,
    campaign_loader,
    campaigns,
    db,
    logs,
    migrate,
    sms,
    yamldoc,
)
from engine.config import EngineConfig, load_config
from engine.errors import (
    CampaignFileError,
    ConfigError,
    EngineError,
    PricingError,
)
from engine.pricing import NoRateError, PriceTable
from engine.providers import adapter_for
from engine.providers.simulator import SimulatorSettings, serve
from engine.queries import QUERIES
from engine.spec import Campaign
from engine.untrusted import printable, printable_lines

log = logging.getLogger(__name__)

Handler = Callable[["Context", argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass
class Context:
    """What every command may need: the parsed options and the configuration, read once."""

    args: argparse.Namespace
    _config: EngineConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> EngineConfig:
        """engine.yaml (or the defaults), loaded on first use."""
        if self._config is None:
            self._config = load_config(self.args.config)
        return self._config

    def database_url(self, *, keep_running: bool = False) -> str:
        """The database URL in use (starting the embedded server if needed)."""
        return db.database_url(self.config, keep_running=keep_running, on_create=_created)

    def where(self, url: str) -> str:
        """The database as a user knows it: the embedded one's folder, else the URL."""
        if db.uses_embedded(self.config):
            return str((self.config.data_dir / "pgdata").resolve())
        return db.redact(url)

    @asynccontextmanager
    async def connection(self, *, migrated: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """One database connection for a short command (on a migrated database)."""
        url = self.database_url()
        conn = await db.connect(url)
        try:
            if migrated:
                await migrate.require_current(conn, where=self.where(url))
            yield conn
        finally:
            await conn.close()


def _created(pgdata: Path) -> None:
    # a command run outside the project's folder creates an empty database: say so
    print(f"engine: created a new embedded PostgreSQL database in {pgdata} (no database_url"
          " in engine.yaml, no $DATABASE_URL)", file=sys.stderr, flush=True)


# --- db -------------------------------------------------------------------------------


async def db_migrate(ctx: Context, args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    async with ctx.connection(migrated=False) as conn:
        applied = await migrate.migrate(conn)
    if not applied:
        print("database is up to date")
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    return 0


async def db_status(ctx: Context, args: argparse.Namespace) -> int:
    """List applied and pending migrations."""
    async with ctx.connection(migrated=False) as conn:
        states = await migrate.status(conn)
    for state in states:
        when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
        print(f"{state.migration.version:04d}_{state.migration.name:<30} {when}")
    return 0


async def db_url(ctx: Context, args: argparse.Namespace) -> int:
    """Print the connection URL (the embedded server is left running for psql)."""
    print(ctx.database_url(keep_running=True))
    return 0


async def db_stop(ctx: Context, args: argparse.Namespace) -> int:
    """Stop the embedded server that ``engine db url`` left running."""
    stopped = db.stop_embedded(ctx.config.data_dir)
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL is not running")
    return 0


# --- sms -------------------------------------------------------------------------------


def sms_report(
    text: str, *, smart: bool, to: str | None, prices: PriceTable | None
) -> dict[str, Any]:
    """The analysis of one text as a JSON-able dict (what ``engine sms analyze`` prints)."""
    result = sms.analyze(text, smart=smart)
    report: dict[str, Any] = {
        "encoding": str(result.encoding), "units": result.units, "segments": result.segments,
        "parts": list(result.parts),
        "non_gsm": [{"index": i, "char": c, "codepoint": f"U+{ord(c):04X}"}
                    for i, c in result.non_gsm],
        "replacements": [{"from": a, "to": b, "count": n} for a, b, n in result.replacements],
    }
    if result.encoding is sms.UCS2 and not smart:
        report["smart_segments"] = sms.analyze(text, smart=True).segments
    if to is not None and prices is not None:
        rate = prices.rate_for(to)
        report.update(to=to, rate=str(rate), cost=str(rate * result.segments))
    return report


def _print_sms_report(report: dict[str, Any]) -> None:
    print(f"encoding: {report['encoding']}")
    unit = "septets" if report["encoding"] == str(sms.GSM7) else "UTF-16 code units"
    print(f"units:    {report['units']} {unit}")
    print(f"segments: {report['segments']}")
    for number, part in enumerate(report["parts"], 1):
        print(f"  part {number}: {part!r}")
    if report["non_gsm"]:
        chars = ", ".join(f"{c['char']!r} ({c['codepoint']}) at {c['index']}"
                          for c in report["non_gsm"][:20])
        print(f"UCS-2 because of: {chars}")
    if "smart_segments" in report:
        saved = report["segments"] - report["smart_segments"]
        print(f"with encoding: smart: {report['smart_segments']} segments ({saved} saved)")
    for rep in report["replacements"]:
        print(f"  replaced {rep['from']!r} -> {rep['to']!r} x{rep['count']}")
    if "cost" in report:
        print(f"cost:     {report['cost']} credits to {report['to']} "
              f"({report['rate']} per segment)")


async def sms_analyze(ctx: Context, args: argparse.Namespace) -> int:
    """Print the encoding, units, segments, parts and cost of a text."""
    to = prices = None
    if args.to:
        to = audience.normalise(args.to, args.region or ctx.config.default_region)
        if to is None:
            raise EngineError(f"not a valid phone number: {args.to!r}")
        if args.account and args.account not in ctx.config.providers:
            raise EngineError(f"no provider account {args.account!r} in the configuration")
        prices = ctx.config.price_table(args.account)
    try:
        report = sms_report(args.text, smart=args.smart, to=to, prices=prices)
    except NoRateError as exc:
        raise PricingError(str(exc)) from exc
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_sms_report(report)
    return 0


# --- output helpers --------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table (control characters shown as escapes)."""
    cells = [[printable(_cell(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):  # in the local zone, which the cell names
        return value.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


# --- contacts and groups ----------------------------------------------------------------


def _progress_bar() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(rows: int) -> None:
        sys.stderr.write(f"\r  {rows:,} rows imported")
        sys.stderr.flush()

    return show


async def contacts_import(ctx: Context, args: argparse.Namespace) -> int:
    """Import contacts from CSV into an optional group."""
    path = Path(args.file)
    if not path.is_file():
        raise EngineError(f"{path}: no such file")
    region = args.region or ctx.config.default_region
    async with ctx.connection() as conn:
        report = await audience.import_contacts(
            conn, path, group=args.group, region=region, progress=_progress_bar())
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"{report.rows} rows: {report.imported} new, {report.updated} updated, "
          f"{report.invalid_total} invalid, {report.duplicates_in_file} repeated in the file"
          + (f"; group {report.group}" if report.group else ""))
    for problem in report.invalid:
        print(f"{path}:{problem.line}: invalid: {problem.raw!r}: {problem.reason}")
    for problem in report.warnings:
        print(f"{path}:{problem.line}: warning: {problem.raw!r}: {problem.reason}")
    hidden = report.invalid_total - len(report.invalid)
    if hidden:
        print(f"... and {hidden} more invalid rows")
    return 0


def _number(ctx: Context, raw: str, region: str | None = None) -> str:
    phone = audience.normalise(raw, region or ctx.config.default_region)
    if phone is None:
        raise EngineError(f"not a valid phone number: {raw!r}")
    return phone


async def contacts_suppress(ctx: Context, args: argparse.Namespace) -> int:
    """Opt a number out of every campaign."""
    phone = _number(ctx, args.number, args.region)
    async with ctx.connection() as conn:
        added = await audience.suppress(conn, phone, reason=args.reason, source="cli",
                                        channel=args.channel)
    print(f"{phone} suppressed" if added else f"{phone} was already suppressed")
    return 0


async def contacts_unsuppress(ctx: Context, args: argparse.Namespace) -> int:
    """Lift a number's opt-out."""
    phone = _number(ctx, args.number, args.region)
    async with ctx.connection() as conn:
        removed = await audience.unsuppress(conn, phone, channel=args.channel)
    print(f"{phone} unsuppressed" if removed else f"{phone} was not suppressed")
    return 0


async def groups_list(ctx: Context, args: argparse.Namespace) -> int:
    """List groups and their members."""
    async with ctx.connection() as conn:
        groups = await audience.list_groups(conn)
    print_table(["group", "members", "created"],
                [(g.name, g.members, g.created_at) for g in groups])
    return 0


# --- campaigns ---------------------------------------------------------------------------


def _load(ctx: Context, paths: Sequence[str]) -> list[tuple[Path, Campaign]]:
    loaded, problems = campaign_loader.load_paths(
        [Path(p) for p in paths], accounts=set(ctx.config.providers),
        default_region=ctx.config.default_region)
    if problems:
        raise CampaignFileError(problems)
    return loaded


async def campaign_validate(ctx: Context, args: argparse.Namespace) -> int:
    """Check campaign files; no database needed."""
    loaded, problems = campaign_loader.load_paths(
        [Path(p) for p in args.paths], accounts=set(ctx.config.providers),
        default_region=ctx.config.default_region)
    for path, campaign in loaded:
        print(f"{path}: ok ({campaign.name})")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


async def campaign_apply(ctx: Context, args: argparse.Namespace) -> int:
    """Store or update campaigns (all files must validate first)."""
    loaded = _load(ctx, args.paths)
    async with ctx.connection() as conn:
        for path, campaign in loaded:
            applied = await campaigns.apply_campaign(conn, campaign, path, ctx.config)
            await conn.execute(QUERIES["notify_work"], "tick")
            when = f", next run {_cell(applied.next_run_at)}" if applied.next_run_at else ""
            print(f"{applied.name}: {applied.action}{when}")
            if applied.file_report is not None:
                report = applied.file_report
                print(f"  audience file: {report.rows} rows, {report.invalid_total} invalid")
    return 0


async def campaign_preview(ctx: Context, args: argparse.Namespace) -> int:
    """Render samples and totals for a campaign file against the database."""
    [(_, campaign)] = _load(ctx, [args.file])
    async with ctx.connection() as conn:
        preview = await campaigns.preview_campaign(conn, campaign, ctx.config, limit=args.limit,
                                                   skipped=args.skipped)
    _print_preview(preview)
    return 0


def _print_preview(preview: campaigns.Preview) -> None:
    from engine.cli_manage import print_notable, print_sample  # it imports this module

    for sample in preview.samples:
        print_sample(sample)
    queued = preview.statuses.get("queued", 0)
    print(f"recipients: {preview.recipients}   to send: {queued}")
    for status, count in sorted(preview.statuses.items()):
        if status != "queued":
            print(f"  {status}: {count}")
    print(f"segments: {preview.segments}   estimated cost: {preview.cost} credits"
          + (f" (budget {preview.budget})" if preview.budget is not None else ""))
    if preview.budget is not None and preview.cost > preview.budget:
        print("  over budget: a run would not start")
    if preview.ucs2_messages:
        chars = ", ".join(f"{c!r} x{n}" for c, n in preview.ucs2_chars.most_common(10))
        print(f"UCS-2 messages: {preview.ucs2_messages}, because of {chars}")
        if preview.smart_saves:
            print(f"  encoding: smart would save {preview.smart_saves} segments")
    print_notable(preview)


async def campaign_list(ctx: Context, args: argparse.Namespace) -> int:
    """Campaigns with their next run and last run's outcome."""
    async with ctx.connection() as conn:
        rows = await conn.fetch(QUERIES["list_campaigns"], args.all)
    print_table(["campaign", "status", "next run", "last run", "run status", "estimated cost",
                 "cost of accepted messages", "counts"],
                [(r["name"], r["status"], r["next_run_at"], r["scheduled_for"],
                  r["run_status"], r["estimated_cost"], r["cost"], r["counts"] or None)
                 for r in rows])
    return 0


async def campaign_send(ctx: Context, args: argparse.Namespace) -> int:
    """Create a run of the campaign now."""
    async with ctx.connection() as conn:
        run_id = await campaigns.create_run_now(conn, args.name)
        await conn.execute(QUERIES["notify_work"], "tick")
    print(f"run {run_id} of {args.name} created; a running daemon expands and sends it")
    return 0


async def campaign_runs(ctx: Context, args: argparse.Namespace) -> int:
    """A campaign's runs, newest first."""
    async with ctx.connection() as conn:
        row = await campaigns.campaign_row(conn, args.name)
        runs = await conn.fetch(QUERIES["runs_of_campaign"], row["id"], args.limit)
    print_table(["run", "kind", "scheduled for", "status", "estimated cost",
                 "cost of accepted messages", "counts", "reason"],
                [(r["id"], r["kind"], r["scheduled_for"], r["status"], r["estimated_cost"],
                  r["cost"], r["live_counts"] or None, r["reason"]) for r in runs])
    return 0


async def campaign_test(ctx: Context, args: argparse.Namespace) -> int:
    """Queue the campaign for one number as a test run."""
    phone = _number(ctx, args.to)
    async with ctx.connection() as conn:
        sent = await campaigns.create_test_send(conn, args.name, phone, ctx.config)
    print(f"message {sent.message_id} (run {sent.run_id}): {sent.status}")
    shown = sent.body if sent.body is not None else sent.detail
    print(f"    {printable_lines(shown or '')}")
    return 0 if sent.status == "queued" else 1


# --- the daemon and its control ---------------------------------------------------------


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM or SIGINT: stop gracefully; a second one exits at once."""
    loop = asyncio.get_running_loop()
    received = 0

    def handle(signum: int) -> None:
        nonlocal received
        received += 1
        if received > 1:
            print("engine: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        log.warning("signal %s: stopping (send it again to exit at once)", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def run_daemon(ctx: Context, args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    from engine.daemon import ROLES, Daemon

    roles = frozenset(r.strip() for r in args.only.split(",")) if args.only else ROLES
    if not roles <= ROLES:
        raise EngineError(f"--only takes {', '.join(sorted(ROLES))}")
    async with ctx.connection(migrated=False) as conn:  # the daemon starts on a fresh database
        await migrate.migrate(conn)
    daemon = Daemon(ctx.config, ctx.database_url(), roles)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await daemon.run(stop)
    return 0


async def _control(ctx: Context, query: str, name: str,
                   *, who: bool = True) -> tuple[str, list[asyncpg.Record]]:
    """Run a control query; the campaign's status before it, and the query's rows."""
    async with ctx.connection() as conn:
        before = str((await campaigns.campaign_row(conn, name))["status"])
        # pause and cancel record who did it in the run's reason; resume clears it
        args = (name, f"{getpass.getuser()} (cli)") if who else (name,)
        rows: list[asyncpg.Record] = await conn.fetch(QUERIES[query], *args)
        await conn.execute(QUERIES["notify_work"], "control")
    return before, rows


def _ended(name: str, status: str, verb: str, runs: int) -> str | None:
    """What pause or resume did to a campaign that fires no more, or None when the usual
    line says it: a finished one-off's run is paused and resumed as any other, but a
    cancelled campaign stays cancelled (only runs asked for by name since can be in
    progress), and with no run at all there is nothing to do."""
    if status not in ("finished", "cancelled"):
        return None
    if not runs:
        raise EngineError(f"{name} is {status}; there is nothing to {verb}")
    if status == "finished":
        return None
    done = "in progress paused" if verb == "pause" else "continue"
    return f"{name}: {runs} run(s) {done}; the campaign stays {status}"


async def campaign_pause(ctx: Context, args: argparse.Namespace) -> int:
    """Pause a campaign and its runs in progress."""
    before, rows = await _control(ctx, "pause_campaign", args.name)
    print(_ended(args.name, before, "pause", len(rows))
          or f"{args.name}: paused ({len(rows)} run(s) in progress paused)")
    return 0


async def campaign_resume(ctx: Context, args: argparse.Namespace) -> int:
    """Resume a paused campaign and its runs; re-check the budget of an over-budget run."""
    before, rows = await _control(ctx, "resume_campaign", args.name, who=False)
    async with ctx.connection() as conn, aiohttp.ClientSession() as session:
        requeued = await campaigns.resume_over_budget(
            conn, args.name, lambda account: _balance_of(ctx, session, account))
    # a one-off stopped over budget has finished firing: its run is what resume is for
    if requeued is None and (ended := _ended(args.name, before, "resume", len(rows))):
        print(ended)
    elif rows or requeued is None:
        print(f"{args.name}: resumed ({len(rows)} run(s) continue)")
    if requeued is not None and requeued.newer_firing is not None:
        print(f"run {requeued.run_id} stays over budget: the campaign fires anew at "
              f"{_cell(requeued.newer_firing)} with the budget as applied")
    elif requeued is not None:
        print(f"run {requeued.run_id}: within budget now, {requeued.messages} messages queued")
    return 0


async def _balance_of(ctx: Context, session: aiohttp.ClientSession,
                      account: str) -> Decimal | None:
    """The account's credit balance, or None when unknown or unreadable (as the expander)."""
    if account not in ctx.config.providers:
        return None
    adapter = adapter_for(account, ctx.config.providers[account], session)
    try:
        async with asyncio.timeout(5):
            return await adapter.balance()
    except (EngineError, TimeoutError, aiohttp.ClientError):
        return None


async def campaign_cancel(ctx: Context, args: argparse.Namespace) -> int:
    """Cancel a campaign: no more firings; unsent messages of its runs are cancelled."""
    _, [row] = await _control(ctx, "cancel_campaign", args.name)
    print(f"{args.name}: cancelled ({row['runs']} run(s), {row['messages']} unsent messages)")
    return 0


async def status(ctx: Context, args: argparse.Namespace) -> int:
    """Live daemons, runs in progress, queues and receipts awaiting a match."""
    from engine.daemon import DEAD_AFTER

    async with ctx.connection() as conn:
        workers = await conn.fetch(QUERIES["live_workers"], DEAD_AFTER)
        runs = await conn.fetch(QUERIES["runs_in_progress"])
        queues = await conn.fetch(QUERIES["queue_depth"])
        pending = await conn.fetch(QUERIES["receipts_pending"])
        health = await conn.fetch(QUERIES["account_health"])
    print("daemons:")
    print_table(["worker", "roles", "started", "heartbeat"],
                [(w["id"], ",".join(w["roles"]), w["started_at"], w["heartbeat_at"])
                 for w in workers])
    print("\nruns in progress:")
    print_table(["run", "campaign", "kind", "status", "scheduled for", "counts"],
                [(r["id"], r["name"], r["kind"], r["status"], r["scheduled_for"],
                  r["counts"] or None) for r in runs])
    print("\nqueues:")
    print_table(["account", "queued", "due now", "oldest due (s)"],
                [(q["account"], q["queued"], q["due"],
                  round(q["oldest_due_seconds"] or 0)) for q in queues])
    print("\nreceipts awaiting a match:")
    print_table(["account", "pending"], [(p["account"], p["pending"]) for p in pending])
    _print_accounts(ctx, health)
    await _print_balances(ctx)
    return 0


async def _print_balances(ctx: Context) -> None:
    async with aiohttp.ClientSession() as session:
        lines = []
        for name, account in ctx.config.providers.items():
            adapter = adapter_for(name, account, session)
            try:
                async with asyncio.timeout(5):
                    balance = await adapter.balance()
            except (EngineError, TimeoutError, aiohttp.ClientError) as exc:
                lines.append((name, f"unavailable: {exc}"))
                continue
            if balance is not None:
                lines.append((name, str(balance)))
    if lines:
        print("\nprovider balances:")
        print_table(["account", "credits"], lines)


async def report(ctx: Context, args: argparse.Namespace) -> int:
    """Outcomes of the latest runs, of a campaign's runs, or of one run."""
    from engine import reports

    async with ctx.connection() as conn:
        if args.html:
            if not args.name:
                raise EngineError("--html needs a campaign name")
            page = await reports.report_html(conn, args.name, args.run)
            Path(args.html).write_text(page, encoding="utf-8")
            print(f"wrote {args.html}")
            return 0
        result = await reports.runs_report(conn, args.name, args.run)
    text = reports.render(result, args.format, raw=args.raw)
    print(printable_lines(text) if sys.stdout.isatty() else text)
    return 0


async def export(ctx: Context, args: argparse.Namespace) -> int:
    """One CSV row per recipient of a campaign (or one run), streamed to a file."""
    from engine import reports

    async with ctx.connection() as conn:
        rows = await reports.export_csv(conn, args.name, args.run, Path(args.out),
                                        masked=args.masked, raw=args.raw)
    print(f"wrote {rows} rows to {args.out}")
    return 0


async def demo(ctx: Context, args: argparse.Namespace) -> int:
    """A whole campaign on the simulator, with live progress and the outcome."""
    from engine.demo import run_demo

    return await run_demo(Path(args.dir) if args.dir else None,
                          Path(args.campaigns) if args.campaigns else None)


# --- providers ---------------------------------------------------------------------------


async def providers_subscribe(ctx: Context, args: argparse.Namespace) -> int:
    """Create the provider-side webhook subscription of an account, where it has one."""
    account = ctx.config.providers.get(args.account)
    if account is None:
        raise ConfigError(f"no provider account {args.account!r} in the configuration")
    public_url = ctx.config.webhooks.public_url
    if not public_url:
        raise ConfigError("webhooks.public_url must be set: providers call the engine there")
    async with aiohttp.ClientSession() as session:
        adapter = adapter_for(args.account, account, session, public_url=public_url)
        subscribe = getattr(adapter, "subscribe", None)
        if subscribe is None:
            print(f"{args.account}: this provider has no subscription API; set its callback URL"
                  f" to {adapter.webhook_url(public_url)} in its dashboard")
            return 0
        created = await subscribe(public_url)
    print(f"{args.account}: subscribed {adapter.webhook_url(public_url)}")
    print(orjson.dumps(created, option=orjson.OPT_INDENT_2).decode())
    return 0


async def providers_check(ctx: Context, args: argparse.Namespace) -> int:
    """One authenticated read of an account; on success, mark it up for every daemon."""
    from engine.accounts import mark_up
    from engine.providers.base import CheckFailed

    account = ctx.config.providers.get(args.account)
    if account is None:
        raise ConfigError(f"no provider account {args.account!r} in the configuration")
    async with aiohttp.ClientSession() as session:
        adapter = adapter_for(args.account, account, session)
        try:
            said = await adapter.check()
        except CheckFailed as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            raise EngineError(f"{exc}{reason}") from exc
    print(said)
    async with ctx.connection() as conn:
        if await mark_up(conn, args.account):
            print(f"{args.account}: was paused; the daemons resume sending now")
    return 0


def _print_accounts(ctx: Context, health: Sequence[asyncpg.Record]) -> None:
    """Each configured account up or down, with why (engine.accounts): a paused account's
    messages stay queued, never failed."""
    rows = {r["account"]: r for r in health}
    print("\naccounts:")
    print_table(["account", "state", "reason", "since", "next probe"],
                [_account_row(name, rows.get(name)) for name in ctx.config.providers])


def _account_row(name: str, row: asyncpg.Record | None) -> tuple[Any, ...]:
    if row is None or row["up"]:
        return (name, "up", None, None, None)
    return (name, "down", f"{row['reason']}: {row['detail']}", row["since"], row["retry_at"])


# --- simulator ---------------------------------------------------------------------------


async def simulator_serve(ctx: Context, args: argparse.Namespace) -> int:
    """Serve the provider simulator until interrupted."""
    settings = SimulatorSettings()
    if args.settings:
        path = Path(args.settings)
        if not path.is_file():  # a typo is one line, as for every other file argument
            raise ConfigError(f"{path}: no such file")
        doc = yamldoc.load(path)
        try:
            settings = SimulatorSettings.model_validate(doc.data or {})
        except ValidationError as exc:
            raise ConfigError("\n".join(doc.validation_problems(exc))) from exc
    running = await serve(settings, args.host, args.port)
    print(f"simulator listening on {running.url} (stats at {running.url}/sim/stats)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await running.close()
    return 0


# --- the parser -----------------------------------------------------------------------


def _group(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
           help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask for confirmation (needed when stdin is not a terminal)")


#: --raw of report and export: engine.untrusted explains the neutralising it turns off
RAW = "CSV cells exactly as stored (no ' before cells a spreadsheet would run as formulas)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="engine", description="SMS campaign engine: YAML campaigns to delivery outcomes."
    )
    parser.add_argument("--config", metavar="PATH", help="engine.yaml to use")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="json: one JSON object per line, for log shippers")
    parser.add_argument("--log-level", help="log level (default: INFO for run, WARNING else)")
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dbs = _group(sub, "db", "database: migrate, status, url, stop")
    _command(dbs, "migrate", db_migrate, "apply pending migrations")
    _command(dbs, "status", db_status, "list applied and pending migrations")
    _command(dbs, "url", db_url, "print the connection URL in use (for psql)")
    _command(dbs, "stop", db_stop, "stop the embedded PostgreSQL server")

    # handlers of the commands that look at and remove data; imported here because they
    # use this module's Context and tables
    from engine import cli_manage as manage

    contacts = _group(sub, "contacts", "contacts: import, list, show, remove, suppress, ...")
    imp = _command(contacts, "import", contacts_import, "import contacts from a CSV file")
    imp.add_argument("file")
    imp.add_argument("--group", help="add the imported contacts to this group")
    imp.add_argument("--region", metavar="CC", help="region for numbers without +country")
    for name, handler, text in (("suppress", contacts_suppress, "opt a number out"),
                                ("unsuppress", contacts_unsuppress, "lift an opt-out")):
        cmd = _command(contacts, name, handler, text)
        cmd.add_argument("number")
        cmd.add_argument("--region", metavar="CC")
        cmd.add_argument("--channel", default="*", help="one channel only (default: all)")
        if name == "suppress":
            cmd.add_argument("--reason")
    lst = _command(contacts, "list", manage.contacts_list, "list contacts (numbers masked)")
    lst.add_argument("--group", metavar="NAME", help="members of this group only")
    lst.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                     help="attribute or field value to match (repeatable)")
    lst.add_argument("--limit", type=int, default=50, help="contacts to show (default 50)")
    lst.add_argument("--unmasked", action="store_true", help="show whole phone numbers")
    show = _command(contacts, "show", manage.contacts_show,
                    "one contact: fields, groups, opt-outs, latest messages")
    show.add_argument("number")
    show.add_argument("--region", metavar="CC")
    show.add_argument("--unmasked", action="store_true", help="show the whole phone number")
    rm = _command(contacts, "remove", manage.contacts_remove,
                  "delete contacts (their messages and opt-outs are kept)")
    rm.add_argument("numbers", nargs="*", metavar="NUMBER")
    rm.add_argument("--group", metavar="NAME", help="every contact of this group")
    rm.add_argument("--region", metavar="CC")
    _yes(rm)
    groups = _group(sub, "groups", "contact groups")
    _command(groups, "list", groups_list, "list groups and their sizes")
    rmm = _command(groups, "remove-members", manage.groups_remove_members,
                   "take numbers out of a group (contacts are kept)")
    rmm.add_argument("name")
    rmm.add_argument("items", nargs="+", metavar="FILE|NUMBER",
                     help="numbers, or CSV files with a phone column")
    rmm.add_argument("--region", metavar="CC")
    _yes(rmm)
    delete = _command(groups, "delete", manage.groups_delete,
                      "delete a group (its contacts are kept)")
    delete.add_argument("name")
    _yes(delete)

    campaign = _group(sub, "campaign", "campaigns: validate, preview, apply, list, ...")
    for name, handler, text in (
        ("validate", campaign_validate, "check campaign files (no database needed)"),
        ("apply", campaign_apply, "store or update campaigns from files"),
    ):
        _command(campaign, name, handler, text).add_argument("paths", nargs="+", metavar="PATH")
    preview = _command(campaign, "preview", campaign_preview, "rendered samples, totals, cost")
    preview.add_argument("file")
    preview.add_argument("--limit", type=int, default=5, help="samples to show (default 5)")
    preview.add_argument("--skipped", type=int, default=10, metavar="N",
                         help="skipped recipients to show (default 10)")
    _command(campaign, "list", campaign_list, "campaigns, next run and last outcome") \
        .add_argument("--all", action="store_true", help="archived campaigns too")
    archive = _command(campaign, "archive", manage.campaign_archive,
                       "stop a campaign's firings and hide it (history is kept)")
    archive.add_argument("name")
    _yes(archive)
    _command(campaign, "send", campaign_send, "create a run now").add_argument("name")
    runs = _command(campaign, "runs", campaign_runs, "a campaign's runs and their counts")
    runs.add_argument("name")
    runs.add_argument("--limit", type=int, default=20)
    test = _command(campaign, "test", campaign_test, "send the campaign to one number")
    test.add_argument("name")
    test.add_argument("--to", required=True, metavar="NUMBER")
    for name, handler, text in (
        ("pause", campaign_pause, "pause a campaign and its runs (takes effect within a second)"),
        ("resume", campaign_resume, "resume a paused campaign and its runs"),
        ("cancel", campaign_cancel, "cancel a campaign; its unsent messages are cancelled"),
    ):
        _command(campaign, name, handler, text).add_argument("name")

    sms = _group(sub, "sms", "SMS text analysis")
    analyze = _command(sms, "analyze", sms_analyze, "encoding, segments and cost of a text")
    analyze.add_argument("text")
    analyze.add_argument("--to", metavar="NUMBER", help="destination, to price the message")
    analyze.add_argument("--account", metavar="NAME", help="provider account whose prices apply")
    analyze.add_argument("--region", metavar="CC", help="region for numbers without +country")
    analyze.add_argument("--smart", action="store_true", help="apply smart encoding first")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")

    run = _command(sub, "run", run_daemon, "run the daemon (until SIGTERM or SIGINT)")
    run.add_argument("--only", metavar="ROLES",
                     help="a subset of scheduler,dispatcher,webhooks (default: all)")
    _command(sub, "status", status, "live daemons, runs, queues, receipts and balances")
    rep = _command(sub, "report", report, "delivery outcomes per campaign and run")
    rep.add_argument("name", nargs="?", help="a campaign (default: the latest run of each)")
    rep.add_argument("--run", type=int, metavar="ID", help="one run in detail")
    rep.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rep.add_argument("--html", metavar="FILE", help="write the chart page to FILE")
    rep.add_argument("--raw", action="store_true", help=RAW)
    exp = _command(sub, "export", export, "export one row per recipient to CSV")
    exp.add_argument("name")
    exp.add_argument("--run", type=int, metavar="ID", help="one run only")
    exp.add_argument("--out", required=True, metavar="FILE.csv")
    exp.add_argument("--masked", action="store_true", help="masked phone numbers only")
    exp.add_argument("--raw", action="store_true", help=RAW)
    demo_cmd = _command(sub, "demo", demo, "run a whole campaign on the simulator")
    demo_cmd.add_argument("--dir", metavar="PATH", help="keep the demo's database and files"
                          " in PATH (default: a temporary directory, removed at the end)")
    demo_cmd.add_argument("--campaigns", metavar="DIR",
                          help="campaign files to apply (default: the examples it ships)")
    providers = _group(sub, "providers", "provider accounts")
    _command(providers, "subscribe", providers_subscribe,
             "create the provider-side webhook subscription").add_argument("account")
    _command(providers, "check", providers_check,
             "one authenticated read (balance, token info); resumes a paused account"
             ).add_argument("account")

    simulator = _command(sub, "simulator", simulator_serve, "serve the provider simulator")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8090)
    simulator.add_argument("--settings", metavar="FILE",
                           help="YAML simulator settings (faults, receipts per provider)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``engine`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("INFO" if args.command == "run" else "WARNING")
    logs.configure(args.log_format, "DEBUG" if args.debug else level)
    ctx = Context(args)
    try:
        handler: Handler = args.handler
        code = asyncio.run(handler(ctx, args))
        sys.stdout.flush()  # here, so a reader gone away is a BrokenPipeError caught below
        return code
    except CampaignFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except EngineError as exc:
        if args.debug:
            raise
        print(f"engine: {exc}", file=sys.stderr)
        return exc.exit_code
    except asyncpg.PostgresError as exc:
        if args.debug:
            raise
        print(f"engine: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:  # a port already in use, a file that cannot be written, ...
        if args.debug:
            raise
        print(f"engine: {exc}", file=sys.stderr)
        return 1


def _broken_pipe() -> int:
    """The reader of stdout went away (``engine ... | head``): exit quietly, as Unix tools do.

    stdout is pointed at /dev/null so the interpreter's last flush does not fail again;
    the exit code is the shell's for a process ended by SIGPIPE.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE
