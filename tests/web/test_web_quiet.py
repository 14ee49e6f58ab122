"""Page answers wait out the daemon's quiet window before any work on the fires' loop (a page worker's pipe
I/O and the reply included): a status page request never runs at a fire's instant."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import aiohttp

from runner.engine.killswitch import ControlStore
from runner.journal.fires import FireStore, open_engine
from runner.journal.store import Journal
from runner.web.server import build_app, start


class FakeWorker:
    """Stands in for the page worker process: records what it was asked to render."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def render(
        self, kind: str, now: dt.datetime, daemon: str, run_id: str | None = None
    ) -> tuple[int, str]:
        self.asked.append(kind)
        return 200, "<html>ok</html>"

    async def aclose(self) -> None:
        return None


def test_page_request_waits_for_the_quiet_window(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'j.db'}")
    FireStore(engine, "d1"), ControlStore(engine), Journal(engine=engine)

    async def scenario() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def quiet() -> None:  # the daemon's Quiet.wait with a fire due: returns when released
            entered.set()
            await release.wait()

        worker = FakeWorker()
        app = build_app(engine, daemon="d1", quiet=quiet, worker=worker)  # type: ignore[arg-type]
        runner, port = await start(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                got = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/"))
                await asyncio.wait_for(entered.wait(), 30)
                assert worker.asked == []  # held at the quiet window: the worker was not asked yet
                release.set()
                response = await asyncio.wait_for(got, 30)
                assert response.status == 200 and await response.text() == "<html>ok</html>"
                assert worker.asked == ["status_html"]
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
