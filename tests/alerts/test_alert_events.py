"""Events end to end: engine events, the kill switch and the daemon's square-off check reach a target."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from helpers.alerts_capture import Capture

from runner.alerts import hooks
from runner.alerts.delivery import Dispatcher
from runner.alerts.observe import alert_observer
from runner.alerts.publish import install
from runner.alerts.watch import AlertWatch
from runner.clock import VirtualClock
from runner.engine.events import EngineEvent, EventKind
from runner.journal.store import Journal
from runner.model import Order, OrderStatus
from runner.playbook.validate import load_playbook
from runner.trading_calendars import load_calendar

ROOT = Path(__file__).resolve().parents[2]
IST = ZoneInfo("Asia/Kolkata")


def test_step_failed_and_order_rejected_from_engine_events(capture: Capture, dispatcher: Dispatcher) -> None:
    pb = SimpleNamespace(name="entry", owner="desk-a")
    seen: list[EngineEvent] = []
    observe = alert_observer(pb, "paper", "RUN-1", seen.append)  # type: ignore[arg-type]
    assert observe is not None
    now = dt.datetime(2026, 12, 1, 9, 15, tzinfo=IST)
    order = Order.__new__(Order)
    object.__setattr__(order, "client_order_id", "cid-1")
    object.__setattr__(order, "status", OrderStatus.REJECTED)
    object.__setattr__(order, "reject_reason", "RMS: margin exceeds")
    observe(EngineEvent(EventKind.ORDER, now, "buy", "", order))
    observe(EngineEvent(EventKind.STEP_FINISHED, now, "buy", "order rejected", None, "failed"))
    assert len(seen) == 2  # the run's own observer still sees everything
    assert dispatcher.flush()
    titles = [p["title"] for p in capture.posts]
    assert any("order_rejected" in t for t in titles) and any("step_failed" in t for t in titles)
    rejected = next(p for p in capture.posts if "order_rejected" in p["title"])
    assert "RMS: margin exceeds" in rejected["message"] and "runner show RUN-1" in rejected["message"]
    assert "desk-a" in rejected["message"]


def test_without_alerts_the_observer_is_unchanged() -> None:
    inner = print
    assert install(None) is None
    assert alert_observer(SimpleNamespace(name="x"), "paper", "R", inner) is inner  # type: ignore[arg-type]


def test_kill_switch_engaged_and_released(capture: Capture, dispatcher: Dispatcher) -> None:
    hooks.kill_switch("normal", "halt", "broker outage")
    hooks.kill_switch("halt", "normal")
    assert dispatcher.flush()
    titles = [p["title"] for p in capture.posts]
    assert any("kill_switch_engaged" in t for t in titles) and any(
        "kill_switch_released" in t for t in titles
    )


def test_square_off_not_flat_pages_before_the_close(
    tmp_path: Path, capture: Capture, dispatcher: Dispatcher
) -> None:
    pb = load_playbook(ROOT / "playbooks" / "intraday_square_off.yaml")
    assert pb.calendar == "NSE"
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    cal = load_calendar("NSE")
    clock = VirtualClock(dt.datetime(2026, 12, 1, 15, 10, tzinfo=IST))  # a Tuesday, close 15:30
    watch = AlertWatch(
        dispatcher.config, journal, clock, lambda: [SimpleNamespace(playbook=pb)], lambda _: cal
    )
    assert watch.check_square_offs(clock.now()) == []  # 20 min before the close: not yet
    clock.advance(11 * 60)  # 15:21, 9 min before the 15:30 close (threshold 10 min)
    published = watch.check()
    assert [a.event.value for a in published if a.event.value == "square_off_not_flat"] == [
        "square_off_not_flat"
    ]
    assert watch.check_square_offs(clock.now()) == []  # paged once a day
    assert dispatcher.flush()
    post = next(p for p in capture.posts if "square_off_not_flat" in p["title"])
    assert "before the NSE close at 15:30 IST" in post["message"] and "no run of it today" in post["message"]


def test_runner_validate_reports_an_alerts_file_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yaml"
    bad.write_text("version: 1\ntargets:\n  ops: json://h/x\nroutes:\n  - {targets: [opz]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert f"{bad}:5:16: error: unknown target 'opz'" in out.stdout and "did you mean 'ops'" in out.stdout
