"""``engine sms analyze``: encoding, segments and cost of a text."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from engine import sms
from engine.cli.context import Context, number
from engine.cli.parsing import Commands, command, group
from engine.errors import EngineError, PricingError
from engine.pricing import NoRateError, PriceTable


def sms_report(
    text: str, *, smart: bool, to: str | None, prices: PriceTable | None
) -> dict[str, Any]:
    """The analysis of one text as a JSON-able dict (what ``engine sms analyze`` prints)."""
    result = sms.analyze(text, smart=smart)
    report: dict[str, Any] = {
        "encoding": str(result.encoding),
        "units": result.units,
        "segments": result.segments,
        "parts": list(result.parts),
        "non_gsm": [
            {"index": i, "char": c, "codepoint": f"U+{ord(c):04X}"} for i, c in result.non_gsm
        ],
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
    for index, part in enumerate(report["parts"], 1):
        print(f"  part {index}: {part!r}")
    if report["non_gsm"]:
        chars = ", ".join(
            f"{c['char']!r} ({c['codepoint']}) at {c['index']}" for c in report["non_gsm"][:20]
        )
        print(f"UCS-2 because of: {chars}")
    if "smart_segments" in report:
        saved = report["segments"] - report["smart_segments"]
        print(f"with encoding: smart: {report['smart_segments']} segments ({saved} saved)")
    for rep in report["replacements"]:
        print(f"  replaced {rep['from']!r} -> {rep['to']!r} x{rep['count']}")
    if "cost" in report:
        print(
            f"cost:     {report['cost']} credits to {report['to']} ({report['rate']} per segment)"
        )


async def sms_analyze(ctx: Context, args: argparse.Namespace) -> int:
    """Print the encoding, units, segments, parts and cost of a text."""
    to = prices = None
    if (args.account or args.region) and not args.to:  # they only price a destination
        raise EngineError(
            "--account and --region apply only with --to NUMBER (the number to price)"
        )
    if args.to:
        to = number(ctx, args.to, args.region)
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


def add_commands(sub: Commands) -> None:
    """``engine sms analyze``."""
    texts = group(sub, "sms", "SMS text analysis")
    analyze = command(texts, "analyze", sms_analyze, "encoding, segments and cost of a text")
    analyze.add_argument("text")
    analyze.add_argument("--to", metavar="NUMBER", help="destination, to price the message")
    analyze.add_argument("--account", metavar="NAME", help="provider account whose prices apply")
    analyze.add_argument("--region", metavar="CC", help="region for numbers without +country")
    analyze.add_argument("--smart", action="store_true", help="apply smart encoding first")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
