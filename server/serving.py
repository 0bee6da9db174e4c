"""Running the server in a process: serve the app until asked to stop, and the signal handling
the outermost runner installs. Shared by ``linli server`` (server/cli.py) and ``linli demo``
(server/demo.py), which therefore never import each other's modules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMessage

from server.app import create_app
from server.settings import Settings

__all__ = ["serve", "stop_on_signals"]

log = logging.getLogger(__name__)


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refuses (a request line over 8 KiB, a bad header)
    at ERROR with a traceback, after answering it 400. That is a client's mistake, not the
    server's: one WARNING line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "%s: %s", (record.getMessage(), str(exc).splitlines()[0])
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())

#: How long a refused request's unread body is drained before the connection is closed.
LINGER_S = 2.0
#: Query parameters whose values never reach the log (a token sent in the wrong place).
_SECRET_PARAMS = ("token", "key", "secret", "password", "auth")


class _AccessLog(AbstractAccessLogger):
    """One line per request: client, method, path and query (secret-looking parameters
    masked), status, bytes, seconds. Headers (Authorization) are never logged."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = "&".join(
            f"{k}=***" if any(s in k.lower() for s in _SECRET_PARAMS) else f"{k}={v}"
            for k, v in request.query.items()
        )
        target = request.path + (f"?{query}" if query else "")
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method, target,
                         response.status, response.body_length, time)  # fmt: skip


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM for as long as the block runs.

    Installed once by the outermost runner and kept through the whole shutdown, so that a
    second Ctrl-C (or a signal sent to the process group) cannot interrupt a clean stop.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    started: Callable[[str], Awaitable[None]] | None = None,
    stopping: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the server until ``stop`` is set, then shut down cleanly.

    ``started`` is awaited with the URL once the server listens; ``stopping`` is awaited when
    a stop is requested, before the server closes (the demo stops its gateways there).
    """
    app = create_app(settings)
    # lingering_time: after refusing a body unread (413), aiohttp reads and discards what the
    # client still sends before closing, so the client sees the answer; 2 s bounds that (the
    # default is 10 s).
    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=_AccessLog, lingering_time=LINGER_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        url = f"http://{settings.http_host}:{settings.http_port}/"
        log.info("Linli server listening on %s", url)
        if started is not None:
            await started(url)
        await stop.wait()
        log.info("stopping")
    finally:
        try:
            if stopping is not None:
                await stopping()
        finally:
            await runner.cleanup()
