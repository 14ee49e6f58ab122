"""The status page's HTTP server (aiohttp), run inside the daemon's event loop: read-only GET routes.
Pages and the JSON API are built from the journal by a :class:`runner.web.worker.PageWorker` process
(``runner serve``), or in a worker thread when none is given (tests, tools); ``/metrics`` (a few cheap
aggregate queries, and this process's own histograms) in a worker thread. Every answer waits out the
daemon's quiet window around fire instants first.

Routes: ``/`` (HTML), ``/run/RUN`` (HTML), ``/api/status``, ``/api/runs/RUN`` (JSON), ``/metrics``."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from sqlalchemy.engine import Engine

from runner.observability.metrics import CONTENT_TYPE, Metrics
from runner.web.auth import token_middleware
from runner.web.worker import PageWorker, render_with

Now = Callable[[], dt.datetime]
TYPES = {
    "status_html": "text/html",
    "run_html": "text/html",
    "status_json": "application/json",
    "run_json": "application/json",
}


def build_app(
    engine: Engine,
    *,
    daemon: str,
    token: str | None = None,
    brokers: Mapping[str, str] | None = None,
    now: Now | None = None,
    quiet: Callable[[], Awaitable[None]] | None = None,
    worker: PageWorker | None = None,
) -> web.Application:
    """``quiet``: awaited before work in this process (the daemon's :meth:`Quiet.wait`)."""
    clock: Now = now or (lambda: dt.datetime.now(dt.UTC))
    metrics = Metrics(engine, daemon, brokers, clock)

    async def answer(kind: str, run_id: str | None = None) -> web.Response:
        if quiet is not None:  # with a worker too: its pipe I/O and the reply run on the fires' loop
            await quiet()
        if worker is not None:
            status, body = await worker.render(kind, clock(), daemon, run_id)
        else:
            status, body = await asyncio.to_thread(render_with, engine, kind, clock(), daemon, run_id)
        return web.Response(status=status, text=body, content_type=TYPES[kind])

    async def index(request: web.Request) -> web.Response:
        return await answer("status_html")

    async def run_page(request: web.Request) -> web.Response:
        return await answer("run_html", request.match_info["run_id"])

    async def status_json(request: web.Request) -> web.Response:
        return await answer("status_json")

    async def run_json(request: web.Request) -> web.Response:
        return await answer("run_json", request.match_info["run_id"])

    async def metrics_text(request: web.Request) -> web.Response:
        if quiet is not None:
            await quiet()
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def closed(app: web.Application) -> None:
        metrics.close()
        if worker is not None:
            await worker.aclose()

    app = web.Application(middlewares=[token_middleware(token)])
    app.on_cleanup.append(closed)
    app.router.add_get("/", index)
    app.router.add_get("/run/{run_id}", run_page)
    app.router.add_get("/api/status", status_json)
    app.router.add_get("/api/runs/{run_id}", run_json)
    app.router.add_get("/metrics", metrics_text)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port in this event loop; returns the runner (``await runner.cleanup()``)
    and the bound port (port 0 picks a free one). No access log: a ``?token=`` would land in it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
