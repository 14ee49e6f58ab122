"""The burst of one instant (runner.brokers.burst): an answered fire waits for the rest, never for ever."""

from __future__ import annotations

import asyncio

from runner.brokers.burst import FREED_PER_TURN, Burst, LateSends, after_send, joined


async def test_an_answered_fire_waits_until_every_fire_of_its_burst_is_answered() -> None:
    burst = Burst()
    a, b = burst.member(), burst.member()
    waiting = asyncio.ensure_future(a.answered())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # b's request still out
    await b.answered()  # the last one: no wait
    await asyncio.wait_for(waiting, 5)


async def test_a_fire_that_ends_without_sending_holds_no_one() -> None:
    burst = Burst()
    a, b = burst.member(), burst.member()
    with joined(b):
        pass  # ended (halted, failed to prepare...): counted gone
    await asyncio.wait_for(a.answered(), 5)


async def test_once_released_a_fire_never_answered_holds_the_others_only_the_bound() -> None:
    burst = Burst(bound=0.0)
    a, _never = burst.member(), burst.member()
    burst.released()
    await asyncio.wait_for(a.answered(), 5)


async def test_only_a_fires_first_request_waits_and_outside_a_burst_nothing_does() -> None:
    await after_send()  # no burst: returns at once
    burst = Burst()
    a, b = burst.member(), burst.member()
    await b.answered()
    with joined(a):
        await after_send()  # a is the last: settled
        await after_send()  # its later requests never wait


async def test_once_settled_the_waiting_fires_are_let_go_a_few_per_turn() -> None:
    burst = Burst()
    members = [burst.member() for _ in range(3 * FREED_PER_TURN + 1)]
    waiting = [asyncio.ensure_future(m.answered()) for m in members[:-1]]
    for _ in range(3):
        await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    await members[-1].answered()  # the last answer settles the burst
    freed = []
    for _ in range(6):
        await asyncio.sleep(0)
        freed.append(sum(w.done() for w in waiting))
    assert freed[0] <= FREED_PER_TURN  # not all at once: their journal writes would hold the loop
    assert freed[-1] == len(waiting)


async def test_an_answered_fire_waits_while_a_late_first_request_is_outstanding() -> None:
    late = LateSends()
    own, taken = Burst(late=late), Burst(late=late)  # the instant's own burst; a taken fire's, later
    a = own.member()
    late.note(["fire-t"])  # a dead peer's claim, taken over: its request is still to go
    t = taken.member("fire-t")
    waiting = asyncio.ensure_future(a.answered())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # its own burst settled (a was its only member), the takeover did not
    await t.answered()  # the taken fire's request answered: it clears itself, then holds no one
    await asyncio.wait_for(waiting, 5)
    assert late.outstanding() == 0


async def test_each_late_first_request_holds_answered_fires_only_the_bound_from_when_it_was_noted() -> None:
    clock = [100.0]
    late = LateSends(bound=2.0, mono=lambda: clock[0])
    late.note(["fire-t"])  # never answered nor ended (a run stuck on a slow broker)
    clock[0] += 1.5
    late.note(["fire-u"])  # a later takeover: held for its own bound
    clock[0] += 1.0  # fire-t's bound passed, fire-u's has not
    assert late.outstanding() == 1
    waiting = asyncio.ensure_future(Burst(late=late).member().answered())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    late.done("fire-u")  # the stale fire-t does not keep it waiting
    await asyncio.wait_for(waiting, 5)
    clock[0] += 5.0
    late.note(["fire-v"])
    clock[0] += 2.0
    await asyncio.wait_for(Burst(late=late).member().answered(), 5)  # bound passed: at once
    assert late.outstanding() == 0


async def test_a_late_fire_that_ends_without_sending_clears_itself_and_done_is_idempotent() -> None:
    late = LateSends()
    late.note(["fire-t"])
    with joined(Burst(late=late).member("fire-t")):
        pass  # failed to prepare, or skipped by its late policy
    late.done("fire-t")
    assert late.outstanding() == 0
    await asyncio.wait_for(Burst(late=late).member().answered(), 5)
