"""The ``engine`` command line.

Every command is an async function ``(ctx, args) -> int`` in the module of its command
group (``engine.cli.*_commands``), which also adds the group's arguments to the parser.
Commands parse arguments, call the module that owns the data and print; they run no SQL.
Errors the engine raises on purpose (:class:`engine.errors.EngineError`) print as one
line on stderr with a non-zero exit code; ``--debug`` adds the traceback. Configuration is
read once (:class:`engine.cli.context.Context`) and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import asyncpg

from engine import __version__, logs
from engine.cli import (
    campaign_commands,
    contact_commands,
    daemon_commands,
    db_commands,
    group_commands,
    provider_commands,
    report_commands,
    sms_commands,
)
from engine.cli.context import Context, Handler
from engine.errors import CampaignFileError, EngineError

__all__ = ["build_parser", "main"]

#: the command groups in the order ``engine --help`` lists them
GROUPS = (
    db_commands,
    contact_commands,
    group_commands,
    campaign_commands,
    sms_commands,
    daemon_commands,
    report_commands,
    provider_commands,
)


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="engine.yaml to use")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line, for log shippers",
    )
    parser.add_argument("--log-level", help="log level (default: INFO for run, WARNING else)")
    parser.add_argument("--version", action="version", version=f"engine {__version__}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="engine", description="SMS campaign engine: YAML campaigns to delivery outcomes."
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in GROUPS:
        commands.add_commands(sub)
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
