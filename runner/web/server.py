"""The status page's HTTP server (aiohttp), run inside the daemon's event loop: read-only GET routes,
each building its answer from the journal in a worker thread (after the daemon's quiet window around
fire instants), so a page view never holds the loop while fires are due.

Routes: ``/`` (HTML), ``/run/RUN`` (HTML), ``/api/status``, ``/api/runs/RUN`` (JSON), ``/metrics``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from runner.observability.metrics import CONTENT_TYPE, Metrics
from runner.web import api, pages
from runner.web.auth import token_middleware

Now = Callable[[], dt.datetime]


def build_app(
    engine: Engine,
    *,
    daemon: str,
    token: str | None = None,
    brokers: Mapping[str, str] | None = None,
    now: Now | None = None,
    quiet: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """``quiet``: awaited before each journal read (the daemon's :meth:`Quiet.wait`)."""
    clock: Now = now or (lambda: dt.datetime.now(dt.UTC))
    metrics = Metrics(engine, daemon, brokers, clock)

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        if quiet is not None:
            await quiet()
        return await asyncio.to_thread(fn, *args)

    async def index(request: web.Request) -> web.Response:
        data = await off_loop(api.status, engine, clock())
        return web.Response(text=pages.render_status(data, daemon), content_type="text/html")

    async def run_page(request: web.Request) -> web.Response:
        data = await off_loop(api.run_detail, engine, request.match_info["run_id"])
        if data is None:
            return web.Response(
                status=404, text=pages.render_not_found("no such run"), content_type="text/html"
            )
        return web.Response(text=pages.render_run(data), content_type="text/html")

    async def status_json(request: web.Request) -> web.Response:
        data = await off_loop(api.status, engine, clock())
        return web.Response(text=json.dumps(data, indent=2, default=str), content_type="application/json")

    async def run_json(request: web.Request) -> web.Response:
        data = await off_loop(api.run_detail, engine, request.match_info["run_id"])
        if data is None:
            return web.json_response({"error": "no such run"}, status=404)
        return web.Response(
            text=json.dumps(data, indent=2, default=str, sort_keys=True), content_type="application/json"
        )

    async def metrics_text(request: web.Request) -> web.Response:
        body = await off_loop(metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def closed(app: web.Application) -> None:
        metrics.close()

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
