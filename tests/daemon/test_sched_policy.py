"""The scheduler's pure decisions: a woken fire's verdict, catch-up plans, the wake lead, quiet windows."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from runner.daemon.arming import MAX_LEAD, wake_lead
from runner.daemon.calendar_gate import Closed, ClosedKind
from runner.daemon.policy import (
    ALIVE_WITHIN,
    CatchUpAction,
    CatchUpItem,
    Missed,
    catch_up_since,
    fire_verdict,
    format_secs,
    live_daemons,
    plan_catch_up,
)
from runner.daemon.status import QUIET, near_instant
from runner.engine.killswitch import ControlState, Mode
from runner.journal.fires import FireState

IST = ZoneInfo("Asia/Kolkata")
NORMAL = ControlState()
HALTED = ControlState(Mode.HALT, "desk says stop")
SECOND = dt.timedelta(seconds=1)
MIN = dt.timedelta(minutes=1)


def ist(h: int, m: int, day: int = 25) -> dt.datetime:
    return dt.datetime(2026, 11, day, h, m, tzinfo=IST).astimezone(dt.UTC)


def never_closed(_t: dt.datetime) -> Closed | None:
    return None


# --- a woken fire --------------------------------------------------------------------------------


def test_on_time_fire_is_claimed() -> None:
    assert fire_verdict(None, dt.timedelta(0), None, "skip", NORMAL) == (FireState.CLAIMED, None, False)
    assert (
        fire_verdict(None, SECOND, None, "skip", NORMAL).state is FireState.CLAIMED
    )  # 1 s counts as on time


def test_late_fire_is_missed_under_skip_and_runs_within_its_window() -> None:
    v = fire_verdict(None, 90 * SECOND, None, "skip", NORMAL)
    assert v.state is FireState.MISSED and v.reason == "1.5m late (late: skip)" and not v.loud
    assert fire_verdict(None, 90 * SECOND, 2 * MIN, "run-within 2m", NORMAL).state is FireState.CLAIMED
    v = fire_verdict(None, 3 * MIN, 2 * MIN, "run-within 2m", NORMAL)
    assert v.state is FireState.MISSED and v.reason == "3.0m late (late: run-within 2m)"


def test_closed_calendar_wins_and_only_missing_data_is_loud() -> None:
    holiday = Closed(ClosedKind.HOLIDAY, "NSE closed on 2026-11-24")
    v = fire_verdict(holiday, 10 * MIN, None, "skip", HALTED)
    assert v == (FireState.SKIPPED, "NSE closed on 2026-11-24", False)
    gap = Closed(ClosedKind.NOT_COVERED, "calendar NSE does not cover 2028-01-03")
    assert fire_verdict(gap, dt.timedelta(0), None, "skip", NORMAL).loud
    assert [k for k in ClosedKind if k.fails_closed] == [
        ClosedKind.UNAVAILABLE,
        ClosedKind.FAILED,
        ClosedKind.NOT_COVERED,
    ]


def test_halt_skips_an_on_time_fire_but_lateness_is_reported_first() -> None:
    assert fire_verdict(None, dt.timedelta(0), None, "skip", HALTED) == (
        FireState.SKIPPED,
        "halted (desk says stop)",
        False,
    )
    assert fire_verdict(None, dt.timedelta(0), None, "skip", ControlState(Mode.HALT)).reason == (
        "halted (no reason given)"
    )
    assert fire_verdict(None, 5 * MIN, None, "skip", HALTED).state is FireState.MISSED
    # reduce-only is the guard's business, not the scheduler's: the fire runs
    assert fire_verdict(None, dt.timedelta(0), None, "skip", ControlState(Mode.REDUCE_ONLY)).state is (
        FireState.CLAIMED
    )


# --- catch-up ------------------------------------------------------------------------------------


def test_catch_up_starts_at_the_last_fire_else_the_heartbeat_within_the_window() -> None:
    now, week = ist(9, 27), dt.timedelta(days=7)
    assert catch_up_since(None, None, now, week) is None  # never ran here: nothing to catch up
    assert catch_up_since(None, ist(9, 0), now, week) == ist(9, 0)
    assert catch_up_since(ist(9, 15), ist(9, 0), now, week) == ist(9, 15)
    assert catch_up_since(ist(9, 15, day=1), None, now, week) == now - week


def test_latest_slot_runs_within_run_within_the_rest_are_missed() -> None:
    slots = [ist(9, 15), ist(9, 20), ist(9, 25)]
    plan = plan_catch_up(slots, [ist(9, 15)], ist(9, 27), 3 * MIN, "run-within 3m", never_closed)
    assert plan.run_now == ist(9, 25)
    assert plan.run_now_detail == "2.0m late, within late: run-within 3m"
    [missed] = plan.missed
    assert missed == Missed(
        ist(9, 20),
        FireState.MISSED,
        "due while the daemon was down (late: run-within 3m)",
        "7.0m late, late: run-within 3m",
    )
    assert missed.action is CatchUpAction.MISSED


def test_everything_is_missed_under_skip_or_beyond_the_window() -> None:
    slots = [ist(9, 15), ist(9, 20)]
    skip = plan_catch_up(slots, [], ist(9, 21), None, "skip", never_closed)
    assert skip.run_now is None and [m.scheduled_for for m in skip.missed] == slots
    beyond = plan_catch_up(slots, [], ist(9, 30), 3 * MIN, "run-within 3m", never_closed)
    assert beyond.run_now is None and len(beyond.missed) == 2


def test_slots_on_closed_days_are_skipped_with_the_calendar_reason() -> None:
    def closed(t: dt.datetime) -> Closed | None:
        day = t.astimezone(IST).date()
        return Closed(ClosedKind.HOLIDAY, f"NSE closed on {day}") if day.day == 24 else None

    plan = plan_catch_up([ist(9, 15, 24), ist(9, 15)], [], ist(9, 16), None, "skip", closed)
    assert [(m.state, m.action, m.detail) for m in plan.missed] == [
        (FireState.SKIPPED, CatchUpAction.SKIPPED, "NSE closed on 2026-11-24"),
        (FireState.MISSED, CatchUpAction.MISSED, "1.0m late, late: skip"),
    ]


def test_slots_already_journaled_are_left_alone() -> None:
    slots = [ist(9, 15), ist(9, 20)]
    plan = plan_catch_up(slots, slots, ist(9, 21), 3 * MIN, "run-within 3m", never_closed)
    assert plan.missed == () and plan.run_now is None


def test_live_daemons_are_fresh_unstopped_and_always_this_one() -> None:
    now = ist(9, 30)
    rows = [
        {"daemon_id": "fresh", "stopped_at": None, "heartbeat_at": now - SECOND},
        {"daemon_id": "stale", "stopped_at": None, "heartbeat_at": now - ALIVE_WITHIN},
        {"daemon_id": "stopped", "stopped_at": now, "heartbeat_at": now},
        {"daemon_id": "me", "stopped_at": now, "heartbeat_at": now - dt.timedelta(days=1)},
    ]
    assert live_daemons(rows, "me", now) == {"fresh", "me"}


def test_report_line_names_the_action() -> None:
    item = CatchUpItem("catcher", ist(9, 25), CatchUpAction.RUNNING_NOW, "2.0m late")
    assert item.action == "running now"
    assert "2026-11-25 09:25:00 IST  running now  2.0m late" in item.line("Asia/Kolkata")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0123, "0.012s"), (59, "59.000s"), (60, "1.0m"), (7199, "120.0m"), (7200, "2.0h")]
)
def test_format_secs(seconds: float, text: str) -> None:
    assert format_secs(dt.timedelta(seconds=seconds)) == text


# --- arming and quiet windows --------------------------------------------------------------------


def test_wake_lead_grows_in_powers_of_two_and_is_capped() -> None:
    assert wake_lead(1.5, 0.002, 0) == wake_lead(1.5, 0.002, 1) == 1.5
    assert wake_lead(1.5, 0.002, 2) == pytest.approx(1.5 + 0.002 * 2)
    assert wake_lead(1.5, 0.002, 3) == wake_lead(1.5, 0.002, 4) == pytest.approx(1.5 + 0.002 * 4)
    assert wake_lead(1.5, 0.002, 1000) == pytest.approx(1.5 + 0.002 * 1024)
    assert wake_lead(1.5, 0.002, 100_000) == MAX_LEAD


def test_near_instant_keeps_background_work_away_from_fires() -> None:
    now = ist(9, 15)
    quiet = dt.timedelta(seconds=QUIET)
    assert near_instant(now, [now + quiet / 2], [])
    assert near_instant(now, [now - quiet / 2], [])
    assert not near_instant(now, [now + quiet], [])
    assert near_instant(now, [], [now - quiet / 2])  # a fire just started executing
    assert not near_instant(now, [], [now - quiet])


async def test_quiet_sees_instants_already_woken_for_and_guards_the_poll() -> None:
    import runner.daemon.status as status
    from runner.clock import VirtualClock

    now = ist(9, 15)
    clock = VirtualClock(now)
    next_fires: dict[dt.datetime, int] = {}  # Arming moved this playbook on to tomorrow when it woke
    imminent = {now + dt.timedelta(milliseconds=4): 1}  # ... but its fire waits for today's instant
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # the quiet window's own wait: let the instant pass
            imminent.clear()

    quiet = status.Quiet(clock, (next_fires, imminent), {}, sleep)
    await quiet.wait()  # heartbeat / reload scan: held back while the instant is near
    assert slept == [QUIET / 2]
    slept.clear()
    imminent[now + dt.timedelta(milliseconds=4)] = 1
    await quiet.around_instant()  # the kill-switch poll: waits out the instant, once, briefly
    assert slept == [pytest.approx(0.004 + status.GUARD_AFTER)]
    slept.clear()
    imminent.clear()
    imminent[now + dt.timedelta(seconds=0.5)] = 1
    await quiet.around_instant()  # not close: polls at once
    assert slept == []


def test_peer_watch_judges_peers_on_its_own_clock() -> None:
    from runner.daemon.policy import STALE_AFTER, PeerWatch

    now = ist(9, 15)
    watch = PeerWatch("me")

    def peer(name: str, beat: dt.datetime, stopped: dt.datetime | None = None) -> dict[str, object]:
        return {"daemon_id": name, "heartbeat_at": beat, "stopped_at": stopped}

    skewed = now - dt.timedelta(minutes=3)  # its clock runs 3 minutes behind ours, but it beats
    rows = [peer("me", now - dt.timedelta(hours=1)), peer("skewed", skewed), peer("stuck", now)]
    assert watch.gone(rows, now) == set()  # first sight: nothing known yet
    for i in range(1, 5):
        t = now + STALE_AFTER * i / 4
        rows = [peer("skewed", skewed + STALE_AFTER * i / 4), peer("stuck", now)]
        assert watch.gone(rows, t) == ({"stuck"} if i == 4 else set())
    assert watch.gone([peer("quit", now, stopped=now)], now) == {"quit"}  # stopped: at once
