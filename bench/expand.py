"""Benchmark expansion: recipients per second and peak memory for one big run.

``python bench/expand.py [--n 1000000] [--database-url URL] [--profile] [--links]``

Creates N contacts in two groups (generated in SQL, with names, locales, time zones and
an attribute), applies a campaign with a template, locales, quiet hours and a frequency
cap, and times one run's expansion: audience query, render, SMS analysis, pricing and COPY
into ``messages``. Peak RSS is this process's ``ru_maxrss``, measured after the database
was filled, so it is the expander's own footprint; run two sizes to see it stay flat.
``--links`` adds a URL to every body and tracks it (``links.track``) with two A/B variants
of the body: one short code per message, COPYed into ``link_codes`` with the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import fresh_database, peak_rss_mib

from engine import campaigns, db, scheduler
from engine.config import EngineConfig
from engine.expander import Expander
from engine.spec import Campaign

FILL = """
INSERT INTO contacts (phone, first_name, last_name, locale, timezone, attributes)
SELECT '+2782' || lpad((1000000 + i)::text, 7, '0'),
       (ARRAY['Ann','Bongani','Carla','Dmitri','Esi','Zoë'])[1 + i % 6] || (i % 2000),
       'Surname' || i,
       (ARRAY[NULL,'en','es','es-MX','pt-BR','fr'])[1 + i % 6],
       (ARRAY[NULL,'Africa/Johannesburg','America/New_York','Europe/London'])[1 + i % 4],
       jsonb_build_object('tier', (ARRAY['gold','silver','bronze'])[1 + i % 3])
  FROM generate_series(1, $1) AS i;
INSERT INTO groups (name) VALUES ('all'), ('staff');
INSERT INTO group_members (group_id, contact_id)
SELECT (SELECT id FROM groups WHERE name = 'all'), id FROM contacts;
INSERT INTO group_members (group_id, contact_id)
SELECT (SELECT id FROM groups WHERE name = 'staff'), id FROM contacts WHERE id % 1000 = 0;
ANALYZE;
"""

SPEC = {
    "name": "bench",
    "provider": "simulator",
    "schedule": {"now": True, "quiet_hours": "23:00-05:00"},
    "audience": {"groups": ["all"], "exclude_groups": ["staff"]},
    "message": {
        "body": "Hi {{ first_name | default('there') }}, as a {{ tier }} member you get "
        "{{ discount }}% off today. Reply STOP to opt out",
        "locales": {
            "es": "Hola {{ first_name }}, {{ discount }}% de descuento hoy. "
            "Responde STOP para salir",
            "pt-BR": "Olá {{ first_name }}, {{ discount }}% de desconto hoje. "
            "Responda SAIR para sair",
        },
        "encoding": "smart",
    },
    "vars": {"discount": 20},
    "limits": {"frequency_cap": "3/24h"},
}


async def run(args: argparse.Namespace) -> None:
    async with fresh_database(args.database_url, "expand") as url:
        conn = await db.connect(url)
        started = time.perf_counter()
        await conn.execute(FILL.replace("$1", str(int(args.n))))
        print(f"generated {args.n:,} contacts in {time.perf_counter() - started:.1f}s")
        config = EngineConfig()
        now = datetime.now(UTC)
        spec = with_links(SPEC) if args.links else SPEC
        await campaigns.apply_campaign(
            conn, Campaign.from_spec(spec), Path("bench.yaml"), config, now=now
        )
        await scheduler.create_due_runs(conn, now, timedelta(hours=1))
        rss_before = peak_rss_mib()
        async with db.pool(url, min_size=2, max_size=4) as pool:
            expander = Expander(pool, config, "bench", batch_size=args.batch)
            profiler = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            result = await expander.run_once()
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - started
        assert result is not None
        await conn.close()
        print(
            f"expanded run {result.run_id}: {result.recipients:,} recipients in {elapsed:.2f}s"
            f" = {result.recipients / elapsed:,.0f} recipients/s"
        )
        print(f"counts: {dict(result.counts)}; estimated cost {result.estimated_cost}")
        print(f"peak RSS: {peak_rss_mib():.0f} MiB (before expansion {rss_before:.0f} MiB)")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def with_links(spec: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's campaign with a tracked link in two variants of its body."""
    url = " https://shop.example.com/spring-sale?ref=sms"
    message = dict(spec["message"])
    body, locales = message.pop("body"), message.pop("locales")
    message["variants"] = [
        {"name": "a", "body": body + url, "locales": {k: v + url for k, v in locales.items()}},
        {"name": "b", "body": "Today only! " + body + url},
    ]
    return {
        **spec,
        "message": message,
        "links": {"track": True, "base_url": "https://s.example.com", "utm": {"source": "sms"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--links", action="store_true", help="tracked links and 2 variants")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
