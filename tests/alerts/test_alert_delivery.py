"""Alerts delivered through apprise's json:// scheme to a loopback capture server (real sockets)."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from helpers.alerts_capture import Capture

from runner.alerts.config import AlertsConfig, parse_config
from runner.alerts.delivery import Dispatcher
from runner.alerts.events import Alert, AlertEvent
from runner.alerts.outbox import Outbox
from runner.journal.fires import open_engine

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class Now:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> dt.datetime:
        return self.at


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"json://127.0.0.1:{port}/hook"


def config(url: str, **extra: object) -> AlertsConfig:
    return parse_config({"version": 1, "targets": {"ops": url}, **extra})


def failed(step: str = "flatten") -> Alert:
    return Alert(AlertEvent.STEP_FAILED, "step flatten failed: NOT FLAT", at=T0, playbook="eod",
                 account="kotak", step=step, run_id="20261201-151500-ab", owner="desk-a")  # fmt: skip


def test_an_alert_reaches_the_target_naming_what_and_what_next(capture: Capture) -> None:
    d = Dispatcher(config(capture.url)).start()
    d.publish(failed())
    assert d.flush()
    d.close()
    [post] = capture.posts
    assert "step_failed" in post["title"] and post["type"] == "failure"
    for word in ("eod", "kotak", "flatten", "20261201-151500-ab", "desk-a", "runner show 20261201-151500-ab"):
        assert word in post["message"]
    assert d.counters.snapshot()["sent"] == {"ops": 1}


def test_repeats_within_the_window_become_one_message_with_a_count(capture: Capture) -> None:
    now = Now()
    d = Dispatcher(config(capture.url, dedup={"window": "5m"}), now=now).start()
    for _ in range(50):
        d.publish(failed())
    assert d.flush()
    assert len(capture.posts) == 1
    now.at += dt.timedelta(minutes=5)
    assert d.flush()
    d.close()
    assert len(capture.posts) == 2
    assert "49 more" in capture.posts[1]["message"]
    assert d.counters.deduplicated == 49


def test_a_target_rate_limit_holds_the_rest_and_sends_one_digest(capture: Capture) -> None:
    now = Now()
    d = Dispatcher(config(capture.url, rate_limit={"per_minute": 2}), now=now).start()
    for i in range(10):
        d.publish(failed(step=f"s{i}"))
    assert d.flush()
    assert len(capture.posts) == 2
    now.at += dt.timedelta(seconds=30)  # one token back
    assert d.flush()
    d.close()
    assert len(capture.posts) == 3
    assert "8 alerts held by the rate limit" in capture.posts[2]["message"]


def test_a_dead_target_is_counted_and_kept_then_sent_by_the_next_process(
    tmp_path: Path, capture: Capture
) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    d = Dispatcher(config(dead_url()), outbox=Outbox(open_engine(url))).start()
    d.publish(failed())  # never raises, never blocks
    assert d.flush()
    d.close()
    assert d.counters.failed == {"ops": 1}
    assert Outbox(open_engine(url)).count() == 1
    # the next process (a fresh engine on the same journal file), its target reachable again
    nxt = Dispatcher(config(capture.url), outbox=Outbox(open_engine(url))).start()
    assert nxt.flush()
    nxt.close()
    assert len(capture.posts) == 1 and "flatten" in capture.posts[0]["message"]
    assert Outbox(open_engine(url)).count() == 0


def test_close_keeps_unsent_alerts_in_the_outbox(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    d = Dispatcher(config(dead_url(), rate_limit={"per_minute": 1}), outbox=Outbox(open_engine(url)))
    d.start()
    d.publish(failed(step="a"))
    d.publish(failed(step="b"))
    d.close(timeout=5)
    assert Outbox(open_engine(url)).count() == 2  # the failed one and the one held at exit


def test_secret_values_are_scrubbed_from_alert_text(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPS_HOOK", capture.url + "/Sup3rS3cretHookToken")
    cfg = parse_config({"version": 1, "targets": {"ops": {"env": "OPS_HOOK"}}})
    d = Dispatcher(cfg).start()
    leak = f"broker said: bad token for {capture.url}/Sup3rS3cretHookToken"
    d.publish(Alert(AlertEvent.LOGIN_FAILED, leak, at=T0, account="kotak"))
    assert d.flush()
    d.close()
    [post] = capture.posts
    assert "Sup3rS3cretHookToken" not in post["message"] and "***" in post["message"]


def test_routes_send_by_event_severity_and_account(capture: Capture) -> None:
    other = Capture()
    try:
        cfg = parse_config({
            "version": 1,
            "targets": {"ops": capture.url, "desk": other.url},
            "routes": [
                {"min_severity": "critical", "targets": ["ops"]},
                {"accounts": ["kotak"], "events": ["account_busy"], "targets": ["desk"]},
            ],
        })  # fmt: skip
        d = Dispatcher(cfg).start()
        d.publish(failed())
        d.publish(Alert(AlertEvent.ACCOUNT_BUSY, "busy", at=T0, account="kotak"))
        d.publish(Alert(AlertEvent.DAEMON_STARTED, "up", at=T0))  # matches no route: nowhere
        assert d.flush()
        d.close()
        assert [p["title"].split("]")[1].strip() for p in capture.posts] == ["step_failed: eod flatten"]
        assert len(other.posts) == 1 and "account_busy" in other.posts[0]["title"]
    finally:
        other.close()


def test_deliveries_reach_the_metrics_hook(capture: Capture) -> None:
    """/metrics counts deliveries by target and result through runner.observability.hooks."""
    from runner.observability import hooks

    seen: list[tuple[str, bool]] = []

    class Sink:
        def broker_call(self, broker: str, operation: str, seconds: float, error: str | None) -> None: ...
        def fire_started(self, playbook: str, lateness: float) -> None: ...
        def alert_delivery(self, target: str, ok: bool) -> None:
            seen.append((target, ok))

    unsubscribe = hooks.subscribe(Sink())
    try:
        good = Dispatcher(config(capture.url)).start()
        good.publish(failed())
        assert good.flush()
        good.close()
        bad = Dispatcher(parse_config({"version": 1, "targets": {"dead": dead_url()}})).start()
        bad.publish(failed())
        assert bad.flush()
        bad.close()
    finally:
        unsubscribe()
    assert seen == [("ops", True), ("dead", False)]
