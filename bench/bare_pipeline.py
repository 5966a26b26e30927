"""The bare pipeline: the same HTTP work as the engine's, with no database (issue 20).

A bare aiohttp client sends N messages (the engine's text, the same numbers, the same
concurrency, one per request or 100 per bulk request) to a simulator in its own process,
which posts the same receipts as in the engine's run (delivered, undelivered, duplicates,
out of order) to a bare aiohttp receiver in a third process that only reads and counts
them. The rate is N ÷ (last receipt received − first request sent): what this machine
allows for sending and taking receipts, so the engine's pipeline rate over it says what
the database and the engine's own work cost. ``bench/e2e.py`` runs it beside the engine.

``python bench/bare_pipeline.py [--n 100000] [--bulk]`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import psutil
from aiohttp import web
from common import Simulator, free_port

BODY = "Hi Name1, as a b member you get 20% off today. Reply STOP to opt out"


def _receive(port: int, count: Any, last: Any, ready: Any) -> None:
    """The receiver process: answer every POST 200 after reading it, count it."""

    async def take(request: web.Request) -> web.Response:
        await request.read()
        with count.get_lock():
            count.value += 1
        last.value = time.time()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class BarePipeline:
    """What one bare pipeline run measured."""

    rate: float  # messages per second, first send -> last receipt received
    posts: int  # receipt calls the receiver took
    cpu_ms: dict[str, float]  # CPU per message: client, simulator, receiver


async def _send(url: str, n: int, batch: int, concurrency: int) -> None:
    path = "/sim/v1/messages/bulk" if batch > 1 else "/sim/v1/messages"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range((n + batch - 1) // batch):
        queue.put_nowait(i)

    def message(k: int) -> dict[str, str]:
        return {"to": f"+2782{k:07d}", "body": BODY, "reference": str(k)}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if batch > 1:
                first = i * batch
                body: Any = {"messages": [message(k) for k in range(first, min(first + batch, n))]}
            else:
                body = message(i)
            async with session.post(url + path, data=orjson.dumps(body), headers=headers) as r:
                orjson.loads(await r.read())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def bare_pipeline(n: int, bulk: bool, concurrency: int) -> BarePipeline:
    """Run the bare pipeline once (see the module docstring)."""
    port = free_port()
    count, last = multiprocessing.Value("q", 0), multiprocessing.Value("d", 0.0)
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(
        target=_receive, args=(port, count, last, ready), daemon=True
    )
    receiver.start()
    if not ready.wait(30):
        raise SystemExit("the bare receiver did not start")
    assert receiver.pid is not None
    sim = Simulator(f"http://127.0.0.1:{port}/webhooks/sim")
    try:
        assert sim.proc.pid is not None
        pids = {"client": os.getpid(), "simulator": sim.proc.pid, "receiver": receiver.pid}
        cpu = {name: _cpu(pid) for name, pid in pids.items()}
        started = time.time()
        await _send(sim.url, n, 100 if bulk else 1, concurrency)
        # every receipt the simulator will post is posted once its count stops moving
        seen, still = -1, 0
        while still < 4:
            stats = await sim.stats(numbers=False)
            done = stats["receipts_posted"] + stats["receipts_dropped"]
            still = still + 1 if done == seen else 0
            seen = done
            await asyncio.sleep(0.25)
        used = {name: (_cpu(pid) - cpu[name]) * 1000 / n for name, pid in pids.items()}
        return BarePipeline(n / max(last.value - started, 1e-3), count.value, used)
    finally:
        sim.stop()
        receiver.terminate()
        receiver.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--bulk", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    got = asyncio.run(bare_pipeline(args.n, args.bulk, args.concurrency))
    cpu = ", ".join(f"{name} {ms:.3f} ms" for name, ms in got.cpu_ms.items())
    print(
        f"bare pipeline ({'bulk' if args.bulk else 'single'}): {got.rate:,.0f} messages/s,"
        f" {got.posts:,} receipt calls; CPU per message: {cpu}"
    )


if __name__ == "__main__":
    main()
