"""Prometheus metrics of one daemon, in a registry of its own (no global state).

Counters and histograms are fed by the parts as they work (sends, limiter waits,
webhooks); gauges that describe the database (queue depth, oldest due message, runs
by status, receipts awaiting a match) are refreshed by :meth:`Metrics.refresh` on a
timer, not per scrape, so a scrape never runs a query. ``engine_account_up`` is set at once
by the dispatcher when an account goes down or comes back, and re-read on that timer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.queries import QUERIES
from engine.webhooks import WebhookStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class Metrics:
    """Everything /metrics shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sent = Counter(
            "engine_messages_sent",
            "Send results by account and outcome",
            ["account", "outcome"],
            registry=r,
        )
        self.send_latency = Histogram(
            "engine_send_latency_seconds",
            "Duration of one provider request",
            ["account"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_wait = Histogram(
            "engine_rate_limiter_wait_seconds",
            "Time a request waited for rate tokens",
            ["account"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.receipt_lag = Histogram(
            "engine_receipt_lag_seconds",
            "Time from sent to a final status",
            ["account"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("engine_queue_depth", "Queued messages", ["account"], registry=r)
        self.oldest_due = Gauge(
            "engine_oldest_due_seconds",
            "Age of the oldest due queued message",
            ["account"],
            registry=r,
        )
        self.receipts_pending = Gauge(
            "engine_receipts_pending",
            "Receipts not yet matched to a message",
            ["account"],
            registry=r,
        )
        self.runs = Gauge("engine_runs", "Campaign runs by status", ["status"], registry=r)
        self.messages = Gauge(
            "engine_messages",
            "Messages of active runs by account and status",
            ["account", "status"],
            registry=r,
        )
        self.account_up = Gauge(
            "engine_account_up",
            "1 if the account can send, 0 while it is down (auth, credit, failing)",
            ["account"],
            registry=r,
        )
        self.reroutes = Counter(
            "engine_reroutes",
            "Messages a route moved to another account after a send that was not accepted",
            ["from", "to"],
            registry=r,
        )

    def watch_accounts(self, accounts: Iterable[str]) -> None:
        """Show every configured account as up until the database says otherwise."""
        for account in accounts:
            self.account_up.labels(account).set(1)

    def watch_webhooks(self, stats: WebhookStats) -> None:
        """Report the webhook handler's own counters at each scrape."""
        self.registry.register(_WebhookCollector(stats))

    def render(self) -> bytes:
        """The exposition text."""
        return bytes(generate_latest(self.registry))

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Re-read the gauges that describe the database."""
        self.queue_depth.clear()
        self.oldest_due.clear()
        for row in await conn.fetch(QUERIES["queue_depth"]):
            self.queue_depth.labels(row["account"]).set(row["queued"])
            self.oldest_due.labels(row["account"]).set(float(row["oldest_due_seconds"] or 0))
        self.receipts_pending.clear()
        for row in await conn.fetch(QUERIES["receipts_pending"]):
            self.receipts_pending.labels(row["account"]).set(row["pending"])
        self._set(
            self.runs, {(r["status"],): r["n"] for r in await conn.fetch(QUERIES["runs_by_status"])}
        )
        self._set(
            self.messages,
            {
                (r["account"], r["status"]): r["n"]
                for r in await conn.fetch(QUERIES["active_messages"])
            },
        )
        for row in await conn.fetch(QUERIES["account_health"]):
            self.account_up.labels(row["account"]).set(1 if row["up"] else 0)

    @staticmethod
    def _set(gauge: Gauge, values: Mapping[tuple[str, ...], int]) -> None:
        gauge.clear()
        for labels, value in values.items():
            gauge.labels(*labels).set(value)


class _WebhookCollector(Collector):
    """Webhook calls and stored events, read from the handler's counters at scrape time."""

    def __init__(self, stats: WebhookStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "engine_webhooks", "Webhook calls by account and result", labels=["account", "result"]
        )
        for (account, result), count in sorted(self.stats.calls.items()):
            calls.add_metric([account, result], count)
        yield calls
        receipts = CounterMetricFamily(
            "engine_receipts_received", "Receipts stored", labels=["account"]
        )
        for account, count in sorted(self.stats.receipts.items()):
            receipts.add_metric([account], count)
        yield receipts
