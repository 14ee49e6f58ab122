"""Page builds in a separate process, so the daemon's event loop never waits for them.

A page with 1,000 playbooks takes ~100 ms of Python to build and render. In a worker thread that work
holds the GIL in 5 ms slices, so a fire due meanwhile starts late (measured: ``bench/status_page.py``,
event loop timer lateness while pages are served). A child process of its own (``python -m
runner.web.worker``, the journal URL in ``$RUNNER_DB``) reads the journal with its own engine and hands
back finished text over a pipe; the daemon only copies bytes. It is started on the first request, answers
one request at a time, and exits when its stdin closes: with the server, or when the daemon dies.

Protocol: one JSON request per line on stdin; the answer is a line ``STATUS LENGTH`` then LENGTH bytes of
UTF-8 body on stdout."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sys
from typing import Any


def render_with(engine: Any, kind: str, now: dt.datetime, daemon: str, run_id: str | None) -> tuple[int, str]:
    """(HTTP status, body) of one page or API answer."""
    from runner.web import api, pages

    if kind in ("status_html", "status_json"):
        data = api.status(engine, now)
        if kind == "status_json":
            return 200, json.dumps(data, indent=2, default=str)
        return 200, pages.render_status(data, daemon)
    detail = api.run_detail(engine, run_id or "")
    if kind == "run_json":
        if detail is None:
            return 404, json.dumps({"error": "no such run"})
        return 200, json.dumps(detail, indent=2, default=str, sort_keys=True)
    if detail is None:
        return 404, pages.render_not_found("no such run")
    return 200, pages.render_run(detail)


CLOSE_WAIT = 5.0  # seconds a child may take to exit after its stdin closes


class PageWorker:
    """The daemon's handle on the child process."""

    def __init__(self, db_url: str | None, calendars_dir: str | None = None) -> None:
        self.db_url = db_url
        self.calendars_dir = calendars_dir  # the daemon's --calendars: the page shows the same coverage
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is not None:
            await self.aclose()  # it died: reap it (and close its pipes) before starting another
        if self._proc is None:
            from runner.journal.db import ENV_VAR
            from runner.trading_calendars import ENV_VAR as CALENDARS_VAR

            # the URL through the environment, not argv: a PostgreSQL password would show in `ps`
            env = dict(os.environ)
            if self.db_url:
                env[ENV_VAR] = self.db_url
            if self.calendars_dir:
                env[CALENDARS_VAR] = self.calendars_dir
            # stderr inherited: the child's own failures land in the daemon's log stream
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "runner.web.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=2**20,
            )
        return self._proc

    async def render(
        self, kind: str, now: dt.datetime, daemon: str, run_id: str | None = None
    ) -> tuple[int, str]:
        request = json.dumps({"kind": kind, "now": now.isoformat(), "daemon": daemon, "run_id": run_id})
        async with self._lock:
            proc = await self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(request.encode() + b"\n")
                await proc.stdin.drain()
                status, length = (await proc.stdout.readline()).split()
                body = await proc.stdout.readexactly(int(length))
            except (ValueError, OSError, asyncio.IncompleteReadError) as exc:
                proc.kill()  # a dead or confused child: the next request starts a fresh one
                await self.aclose()
                return 503, f"status page worker failed ({type(exc).__name__}); retry\n"
        return int(status), body.decode()

    async def aclose(self) -> None:
        """Stop the child: EOF on its stdin (it exits), then reap it; killed if it does not go."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.communicate(), CLOSE_WAIT)
        except TimeoutError:
            proc.kill()
            await proc.communicate()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop (stdin EOF)
    from runner.journal.fires import open_engine

    engine = open_engine(None)  # $RUNNER_DB as the daemon set it, else the same default as the daemon
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            now = dt.datetime.fromisoformat(req["now"])
            status, body = render_with(engine, req["kind"], now, req["daemon"], req["run_id"])
        except Exception as exc:  # one bad page never takes the worker down
            status, body = 500, f"status page failed: {type(exc).__name__}: {exc}\n"
        data = body.encode()
        out.write(f"{status} {len(data)}\n".encode() + data)
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
