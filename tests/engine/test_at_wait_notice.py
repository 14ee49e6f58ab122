"""A run waiting for a step's ``at:`` says what it waits for and until when (issue 15): the engine emits a
WAITING event; the terminal prints one line off a TTY and an in-place countdown on one."""

from __future__ import annotations

import asyncio
import datetime as dt
import io

from helpers.engine import at, make_env, playbook

from runner.commands.terminal import wait_notice, with_wait_notice
from runner.engine.events import EngineEvent, EventKind
from runner.timefmt import zone

IST = zone("Asia/Kolkata")
STEPS = """\
steps:
  - {kind: cancel, id: tidy, all_open: {}}
  - {kind: cancel, id: eod, all_open: {}, at: "15:20"}
"""


async def test_a_step_waiting_for_its_at_says_so_with_the_instant(tmp_path) -> None:
    env = make_env(tmp_path, start=at(9, 15))
    report = await env.run(playbook(STEPS))
    assert report.ok
    (waiting,) = [e for e in env.events if e.kind is EventKind.WAITING]
    assert waiting.step_id == "eod" and waiting.until == at(15, 20) and waiting.message == "at 15:20"
    # --now does not wait, so it says nothing of waiting
    (tmp_path / "now").mkdir()
    env2 = make_env(tmp_path / "now", start=at(9, 15))
    await env2.run(playbook(STEPS), ignore_at=True)
    assert not [e for e in env2.events if e.kind is EventKind.WAITING]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _waiting() -> EngineEvent:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    until = now + dt.timedelta(minutes=4, seconds=5)
    return EngineEvent(EventKind.WAITING, now, "eod", "at 15:20", until=until)


def test_off_a_tty_one_line_names_step_instant_and_zone() -> None:
    out = io.StringIO()
    notice = wait_notice(IST, out)
    e = _waiting()
    notice(e)
    notice(EngineEvent(EventKind.STEP_STARTED, e.until or e.at, "eod", "cancel"))
    lines = out.getvalue().splitlines()
    local = (e.until or e.at).astimezone(IST)
    assert lines == [f"waiting for step eod (at 15:20): until {local:%Y-%m-%d %H:%M:%S} IST, in 4m05s"]


async def test_on_a_tty_a_countdown_is_rewritten_in_place_and_cleared() -> None:
    out = Tty()
    seen: list[EngineEvent] = []
    observer = with_wait_notice(seen.append, IST, out)
    observer(_waiting())
    await asyncio.sleep(0)  # the countdown task draws once
    drawn = out.getvalue()
    assert drawn.startswith("\r\x1b[2K") and "waiting for step eod" in drawn and "\n" not in drawn
    assert "IST, in 4m0" in drawn
    observer(EngineEvent(EventKind.STEP_STARTED, dt.datetime.now(dt.UTC), "eod", "cancel"))
    assert out.getvalue().endswith("\r\x1b[2K")  # the line gives way to the next event
    assert [e.kind for e in seen] == [EventKind.WAITING, EventKind.STEP_STARTED]
