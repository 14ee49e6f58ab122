"""Hooks on the fire path only queue; the histograms take the observations at the next scrape."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from runner.engine.killswitch import ControlStore
from runner.journal.fires import FireStore, open_engine
from runner.journal.store import Journal
from runner.observability import hooks
from runner.observability.metrics import Metrics


def lateness_count(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("runner_fire_lateness_seconds_count", {"daemon": "d1"})


def test_a_hook_call_is_queued_and_the_scrape_applies_it(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'j.db'}")
    FireStore(engine, "d1"), ControlStore(engine), Journal(engine=engine)  # the daemon's tables
    metrics = Metrics(engine, "d1")
    try:
        hooks.fire_started("p", 0.003)
        hooks.broker_call("paper", "place", 0.0004)
        hooks.alert_delivery("team", ok=False)
        assert lateness_count(metrics) in (None, 0.0)  # nothing touched a histogram on the fire path
        assert len(metrics.process.pending) == 3
        text = metrics.render().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("runner_fire_lateness_seconds_count", (("daemon", "d1"),))] == 1
        place = (("broker", "paper"), ("daemon", "d1"), ("error", ""), ("operation", "place"))
        assert samples[("runner_broker_request_seconds_count", place)] == 1
        failed = (("daemon", "d1"), ("result", "failed"), ("target", "team"))
        assert samples[("runner_alert_deliveries_total", failed)] == 1
        assert not metrics.process.pending
        metrics.render()  # applied once, not again
        assert lateness_count(metrics) == 1
    finally:
        metrics.close()
