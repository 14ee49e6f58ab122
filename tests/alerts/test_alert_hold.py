"""The alert worker holds off while fires are due or starting (an alert never delays an order)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from helpers.alerts_capture import Capture

from runner.alerts.config import AlertsConfig
from runner.alerts.delivery import Dispatcher
from runner.alerts.events import Alert, AlertEvent
from runner.alerts.outbox import Message
from runner.clock import VirtualClock
from runner.daemon.status import QUIET, Quiet


def test_worker_sends_nothing_while_busy_and_everything_after() -> None:
    capture = Capture()
    busy = threading.Event()
    busy.set()
    asked = threading.Event()

    def is_busy() -> float:
        asked.set()
        return 0.05 if busy.is_set() else 0.0

    d = Dispatcher(AlertsConfig(targets={"team": capture.url}))
    d.hold_while(is_busy)
    d.start()
    try:
        d.publish(Alert(AlertEvent.STEP_FAILED, "step buy failed", playbook="p"))
        assert asked.wait(5)
        assert not d.flush(timeout=0.3)  # held: the flush marker waits behind the alert
        assert capture.posts == []
        busy.clear()
        assert d.flush(timeout=10)
        assert [p["title"] for p in capture.posts] == ["[CRITICAL] step_failed: p"]
    finally:
        d.close(5)
        capture.close()


def test_a_predicate_that_raises_is_asked_again() -> None:
    sent: list[Message] = []
    calls = iter([RuntimeError("dictionary changed size during iteration"), 0.01, 0.0])

    def flaky() -> float:
        nxt = next(calls, 0.0)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    d = Dispatcher(AlertsConfig(targets={"team": "json://127.0.0.1:9/x"}), sender=lambda u, m: sent.append(m))
    d.hold_while(flaky)
    d.start()
    try:
        d.publish(Alert(AlertEvent.FIRE_FAILED, "fire failed: boom", playbook="p"))
        assert d.flush(timeout=10)
        assert len(sent) == 1
    finally:
        d.close(5)


def test_quiet_remaining_around_a_due_instant() -> None:
    t0 = dt.datetime(2030, 1, 2, 3, 45, tzinfo=dt.UTC)
    clock = VirtualClock(t0)
    due: dict[dt.datetime, int] = {t0 + dt.timedelta(seconds=10): 1}
    quiet = Quiet(clock, (due,), {})
    assert quiet.remaining() == 0
    clock.advance(10 - QUIET / 2)
    assert quiet.remaining() == pytest.approx(QUIET * 1.5)  # sleep once, to the window's end
    clock.advance(QUIET * 1.5)
    assert quiet.remaining() == 0
