"""The demo's failover: two simulator accounts behind a route, one of them failing mid-run.

The demo's campaigns name ``provider: simulator``. In the demo's own ``engine.yaml`` that
name is a route (strategy ``priority``) over two simulator accounts, ``sim-a`` and
``sim-b``, each behind a simulator process of its own, as two providers would be. Once the
A/B winner is chosen and the rest of the audience is being sent, ``sim-a`` has an outage
(its API answers 500 and takes nothing): after a few failed requests the account is marked
down, the route sends through ``sim-b``, and every message still goes out once. A few
seconds later ``sim-a`` is back; its probe (every 2 s in the demo, ``health.cooloff``)
finds it up and it takes the traffic again. The outcome shows who carried what.

Outside the demo, ``simulator`` is the built-in account of the default configuration,
so the same campaign files validate and send there too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine import db
from engine.queries import QUERIES
from engine.simulator import RunningSimulator, Stats
from engine.simulator.accounts import ACCOUNTS

PRIMARY, BACKUP, ROUTE = "sim-a", "sim-b", "simulator"
#: seconds into the sending of the rest of the audience when sim-a fails, and for how long
OUTAGE_AFTER, OUTAGE_FOR = 0.5, 2.5


def route_settings(primary_url: str, backup_url: str, secret: str) -> dict[str, Any]:
    """``providers``, ``routes`` and ``health`` of the demo's engine.yaml."""
    account = {"type": "simulator", "rate": 400, "concurrency": 16, "webhook_secret": secret}
    return {
        "providers": {
            PRIMARY: {**account, "base_url": primary_url},
            BACKUP: {**account, "base_url": backup_url},
        },
        "routes": {ROUTE: {"strategy": "priority", "accounts": [PRIMARY, BACKUP]}},
        "health": {"down_after": 3, "cooloff": "2s", "cooloff_max": "2s"},
    }


async def outage(url: str, sim: RunningSimulator, run_id: int, say: Callable[[str], None]) -> None:
    """Take sim-a down shortly after the rest of the audience starts, then bring it back."""
    conn = await db.connect(url)
    try:
        for _ in range(600):  # a minute at most: the demo's deadline ends it sooner
            if await conn.fetchval(QUERIES["demo_winner_decided"], run_id):
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    await asyncio.sleep(OUTAGE_AFTER)
    switch = sim.app[ACCOUNTS]
    switch.set("simulator", up=False)
    say(f"{PRIMARY} is down (an outage: every request answered 500); the route sends via {BACKUP}")
    await asyncio.sleep(OUTAGE_FOR)
    switch.set("simulator", up=True)
    say(f"{PRIMARY} is back up; its probe returns it to the route")


def most_to_one_number(*stats: Stats) -> int:
    """The most messages any one number received, over every simulator."""
    total: Counter[str] = Counter()
    for one in stats:
        total.update(one.per_number)
    return max(total.values(), default=0)


async def carried(url: str, run_id: int, say: Callable[[str], None]) -> None:
    """Which account carried how many messages of the run, and how many were moved."""
    conn = await db.connect(url)
    try:
        rows = await conn.fetch(QUERIES["report_accounts"], run_id)
    finally:
        await conn.close()
    say(f"\ncarried by account (route {ROUTE}: {PRIMARY} first, {BACKUP} when it is down):")
    for row in rows:
        say(
            f"  {row['account']:<6} {row['accepted']:>6} sent, {row['delivered']:>6} delivered,"
            f" {row['rerouted']:>5} moved here from another account, cost {row['cost']}"
        )
