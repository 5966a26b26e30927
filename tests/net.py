"""Network helpers the tests share: a free local port for a server a test starts, and a
proxy that holds a server's replies."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HoldingProxy:
    """A TCP proxy to ``host:port`` that, once a client connection has sent bytes
    containing ``marker``, holds the server's replies on that connection until
    :meth:`release`: the statement runs (and commits) on the server while its client
    waits, which is how a test puts a cancellation between the two."""

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        """``host`` may be a directory: the server's Unix socket there (an embedded
        server's URL names it with ``?host=``)."""
        self.host, self.port, self.marker = host, port, marker
        self.released = asyncio.Event()
        self.held = 0  # connections whose replies are being held
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        self.released.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                f"{self.host}/.s.PGSQL.{self.port}"
            )
        else:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        marked = asyncio.Event()

        async def up() -> None:
            while data := await reader.read(65536):
                if self.marker in data and not marked.is_set():
                    marked.set()
                    self.held += 1
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def down() -> None:
            while data := await upstream_reader.read(65536):
                if marked.is_set():
                    await self.released.wait()
                writer.write(data)
                await writer.drain()
            writer.close()

        pair = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        self._tasks.update(pair)
        try:
            await asyncio.gather(*pair, return_exceptions=True)
        finally:
            self._tasks.difference_update(pair)
            for stream in (writer, upstream_writer):
                stream.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await stream.wait_closed()
