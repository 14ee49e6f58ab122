"""Issue 16: a survivor's takeover must never delay its own burst. Fires taken over for an instant are
prepared only once this daemon's own burst of that instant (or of an earlier one) was released: preparing
them first held the own burst back past its late grace, and every own armed run was disarmed."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from helpers.engine import playbook

from runner.brokers.burst import after_send
from runner.daemon.release import Fire, FireResult, Release
from runner.journal.fires import FireState

INSTANT = dt.datetime(2026, 12, 7, 3, 45, tzinfo=dt.UTC)
PLACE = """
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
"""


class HeldClock:
    """Time stands still until the test lets an instant come (``come``): nothing here depends on speed."""

    def __init__(self, now: dt.datetime) -> None:
        self._now = now
        self._came: dict[dt.datetime, asyncio.Event] = {}

    def now(self) -> dt.datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def sleep_until(self, when: dt.datetime) -> None:
        if when > self._now:
            await self._came.setdefault(when, asyncio.Event()).wait()
        await asyncio.sleep(0)

    def come(self, when: dt.datetime) -> None:
        self._now = max(self._now, when)
        for at, event in self._came.items():
            if at <= when:
                event.set()


class Recorder:
    """An executor that notes when each fire is prepared and run; with ``answering``, each first request
    is answered at once and the run's follow-up work comes after ``after_send``."""

    def __init__(self, answering: bool = False) -> None:
        self.events: list[str] = []
        self.answering = answering

    async def __call__(self, fire: Fire) -> FireResult:
        raise AssertionError("prepared fires only")

    async def prepare(self, fire: Fire) -> Any:
        self.events.append(f"prepare {fire.fire_id}")
        events = self.events
        answering = self.answering

        class Prepared:
            async def run(self) -> FireResult:
                events.append(f"run {fire.fire_id}")
                if answering:
                    await after_send()
                    events.append(f"follow-up {fire.fire_id}")
                return FireResult(FireState.SUCCEEDED)

            async def abandon(self, reason: str, halted: bool) -> None:
                events.append(f"abandon {fire.fire_id}")

        return Prepared()


def _release(clock: HeldClock, executor: Recorder, released: list[str]) -> Release:
    async def set_state(*args: Any) -> None:
        return None

    def set_state_soon(*args: Any) -> asyncio.Future[bool]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done

    batcher: Any = SimpleNamespace(set_state=set_state, set_state_soon=set_state_soon)
    store: Any = SimpleNamespace(release=released.append)
    return Release(executor, batcher, store, clock, lambda: None, lambda: None)


def _fire(name: str, instant: dt.datetime, *, taken: bool = False) -> Fire:
    pb = playbook(PLACE, name=name)
    return Fire(pb, Path(f"{name}.yaml"), "v1", instant, f"run-{name}", f"fire-{name}", taken=taken)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_fires_taken_over_for_an_instant_are_prepared_after_the_own_burst_is_released() -> None:
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Recorder()
    release = _release(clock, executor, [])
    own = [asyncio.ensure_future(release.release(_fire(f"own{i}", INSTANT))) for i in range(3)]
    await _settle()
    taken = [asyncio.ensure_future(release.release(_fire(f"t{i}", INSTANT, taken=True))) for i in range(3)]
    await _settle()
    # the own burst is prepared and waits for its instant; the taken fires are not prepared meanwhile
    assert executor.events == [f"prepare fire-own{i}" for i in range(3)]
    clock.come(INSTANT)
    await asyncio.gather(*own, *taken)
    first_taken = executor.events.index("prepare fire-t0")
    assert {f"run fire-own{i}" for i in range(3)} <= set(executor.events[:first_taken])
    assert {f"run fire-t{i}" for i in range(3)} <= set(executor.events)  # and then sent too


async def test_a_taken_fire_waits_for_an_earlier_own_burst_but_not_for_a_later_one() -> None:
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Recorder()
    release = _release(clock, executor, [])
    later = asyncio.ensure_future(release.release(_fire("later", INSTANT + dt.timedelta(seconds=1))))
    before = INSTANT - dt.timedelta(milliseconds=500)
    earlier = asyncio.ensure_future(release.release(_fire("earlier", before)))
    await _settle()
    taken = asyncio.ensure_future(release.release(_fire("t", INSTANT, taken=True)))
    await _settle()
    assert "prepare fire-t" not in executor.events  # behind the earlier own burst
    clock.come(before)
    await _settle()
    assert "prepare fire-t" in executor.events  # not held for the later own burst
    assert "run fire-later" not in executor.events
    clock.come(INSTANT + dt.timedelta(seconds=1))
    await asyncio.gather(later, earlier, taken)
    assert executor.events.index("run fire-earlier") < executor.events.index("prepare fire-t")


async def test_a_taken_fire_with_no_own_burst_due_is_prepared_at_once() -> None:
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Recorder()
    release = _release(clock, executor, [])
    taken = asyncio.ensure_future(release.release(_fire("t", INSTANT, taken=True)))
    await _settle()
    assert executor.events == ["prepare fire-t"]
    clock.come(INSTANT)
    await taken
    assert executor.events == ["prepare fire-t", "run fire-t"]


async def test_a_taken_fire_cancelled_while_it_yields_gives_its_claim_back_unprepared() -> None:
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Recorder()
    released: list[str] = []
    release = _release(clock, executor, released)
    own = asyncio.ensure_future(release.release(_fire("own", INSTANT)))
    await _settle()
    taken = asyncio.ensure_future(release.release(_fire("t", INSTANT, taken=True)))
    await _settle()
    release.pending["fire-t"].cancel()  # shutdown cancels the pending fires
    await asyncio.gather(taken, return_exceptions=True)
    assert taken.cancelled() and released == ["fire-t"] and "prepare fire-t" not in executor.events
    assert "fire-t" not in release.pending
    clock.come(INSTANT)
    await own



async def test_the_own_bursts_follow_ups_wait_for_the_fires_taken_over_to_send() -> None:
    """The lapsed claims are noted as soon as they are found (ScaleOut): from then on the own fires'
    follow-up work (their acks journaled, verify reads) waits until each taken fire's first request was
    answered, so preparing the taken fires is not queued behind it on the loop."""
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Recorder(answering=True)
    release = _release(clock, executor, [])
    own = [asyncio.ensure_future(release.release(_fire(f"own{i}", INSTANT))) for i in range(3)]
    await _settle()
    release.gate.late.note(["fire-t0", "fire-t1"])  # the takeover look found them
    clock.come(INSTANT)
    await _settle()
    assert {f"run fire-own{i}" for i in range(3)} <= set(executor.events)  # sent at the instant
    assert not any(e.startswith("follow-up") for e in executor.events)  # held for the taken fires
    taken = [asyncio.ensure_future(release.release(_fire(f"t{i}", INSTANT, taken=True))) for i in range(2)]
    await asyncio.wait_for(asyncio.gather(*own, *taken), 5)
    first_follow_up = min(i for i, e in enumerate(executor.events) if e.startswith("follow-up fire-own"))
    assert {"run fire-t0", "run fire-t1"} <= set(executor.events[:first_follow_up])
    assert release.gate.late.outstanding() == 0


class Primed(Recorder):
    """Own fires whose request was written at the gate (an armed, primed request); taken fires are not."""

    async def prepare(self, fire: Fire) -> Any:
        prepared = await super().prepare(fire)
        if not fire.taken:
            prepared.send_armed = lambda released: self.events.append(f"written {fire.fire_id}") or True
        return prepared


async def test_own_fires_whose_request_left_run_their_path_to_the_reply_after_the_taken_fires_sent() -> None:
    clock = HeldClock(INSTANT - dt.timedelta(seconds=1))
    executor = Primed(answering=True)
    release = _release(clock, executor, [])
    own = [asyncio.ensure_future(release.release(_fire(f"own{i}", INSTANT))) for i in range(2)]
    await _settle()
    release.gate.late.note(["fire-t0"])
    clock.come(INSTANT)
    await _settle()
    assert {"written fire-own0", "written fire-own1"} <= set(executor.events)  # sent at the instant
    assert not any(e.startswith("run fire-own") for e in executor.events)  # their paths wait
    taken = asyncio.ensure_future(release.release(_fire("t0", INSTANT, taken=True)))
    await asyncio.wait_for(asyncio.gather(*own, taken), 5)
    assert executor.events.index("run fire-t0") < executor.events.index("run fire-own0")
