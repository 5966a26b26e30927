"""``engine report``, ``engine export`` and ``engine demo``: outcomes for people."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.context import Context
from engine.cli.parsing import RAW, Commands, command
from engine.errors import EngineError
from engine.untrusted import printable_lines


async def report(ctx: Context, args: argparse.Namespace) -> int:
    """Outcomes of the latest runs, of a campaign's runs, or of one run."""
    from engine import report_output, reports

    async with ctx.connection() as conn:
        if args.html:
            if not args.name:
                raise EngineError("--html needs a campaign name")
            page = await reports.report_html(conn, args.name, args.run)
            Path(args.html).write_text(page, encoding="utf-8")
            print(f"wrote {args.html}")
            return 0
        result = await reports.runs_report(conn, args.name, args.run)
    text = report_output.render(result, args.format, raw=args.raw)
    print(printable_lines(text) if sys.stdout.isatty() else text)
    return 0


async def export(ctx: Context, args: argparse.Namespace) -> int:
    """One CSV row per recipient of a campaign (or one run), streamed to a file."""
    from engine import reports

    async with ctx.connection() as conn:
        rows = await reports.export_csv(
            conn, args.name, args.run, Path(args.out), masked=args.masked, raw=args.raw
        )
    print(f"wrote {rows} rows to {args.out}")
    return 0


async def demo(ctx: Context, args: argparse.Namespace) -> int:
    """A whole campaign on the simulator, with live progress and the outcome."""
    from engine.demo import run_demo

    return await run_demo(
        Path(args.dir) if args.dir else None, Path(args.campaigns) if args.campaigns else None
    )


def add_commands(sub: Commands) -> None:
    """``engine report``, ``engine export`` and ``engine demo``."""
    rep = command(sub, "report", report, "delivery outcomes per campaign and run")
    rep.add_argument("name", nargs="?", help="a campaign (default: the latest run of each)")
    rep.add_argument("--run", type=int, metavar="ID", help="one run in detail")
    rep.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rep.add_argument("--html", metavar="FILE", help="write the chart page to FILE")
    rep.add_argument("--raw", action="store_true", help=RAW)
    exp = command(sub, "export", export, "export one row per recipient to CSV")
    exp.add_argument("name")
    exp.add_argument("--run", type=int, metavar="ID", help="one run only")
    exp.add_argument("--out", required=True, metavar="FILE.csv")
    exp.add_argument("--masked", action="store_true", help="masked phone numbers only")
    exp.add_argument("--raw", action="store_true", help=RAW)
    demo_cmd = command(sub, "demo", demo, "run a whole campaign on the simulator")
    demo_cmd.add_argument(
        "--dir",
        metavar="PATH",
        help="keep the demo's database and files"
        " in PATH (default: a temporary directory, removed at the end)",
    )
    demo_cmd.add_argument(
        "--campaigns",
        metavar="DIR",
        help="campaign files to apply (default: the examples it ships)",
    )
