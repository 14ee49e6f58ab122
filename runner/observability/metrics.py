"""Prometheus metrics for ``/metrics`` (issue 14 §3), through prometheus-client.

Two sources: the journal (a custom collector with a few cheap aggregate queries at each scrape: fires by
state, orders by account/broker and final status, unsettled and unknown intents, halt state, every
daemon's last heartbeat, master age), so every daemon of an HA pair reports the same journal picture; and
this process (histograms fed by :mod:`runner.observability.hooks`: broker request latency, fire lateness,
alert deliveries). Every sample carries ``daemon``: the id of the process that served the scrape."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from runner.journal.tables import Resolution, order_intents
from runner.model import TERMINAL, OrderStatus
from runner.observability import hooks

# Seconds. Lateness of a fire past its instant: the scheduler aims at ~1 ms.
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JournalCollector(Collector):
    """Journal-derived values, read at each scrape."""

    def __init__(
        self,
        engine: Engine,
        daemon: str,
        brokers: Mapping[str, str],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.engine = engine
        self.daemon = daemon
        self.brokers = dict(brokers)  # account -> broker name (from the accounts file)
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        from runner.engine.killswitch import ControlStore, Mode
        from runner.journal.fires import FireState, daemons, fires, read
        from runner.web.snapshot import master_snapshot

        d = self.daemon
        now = self.clock()
        c = order_intents.c
        with read(self.engine) as conn:
            by_state: dict[str, int] = dict(
                conn.execute(sa.select(fires.c.state, sa.func.count()).group_by(fires.c.state)).all()
            )
            orders = conn.execute(
                sa.select(c.account, c.status, sa.func.count())
                .where(c.status.in_([s.value for s in TERMINAL]))
                .group_by(c.account, c.status)
            ).all()
            unsettled = conn.execute(
                sa.select(sa.func.count()).where(c.resolution == Resolution.PENDING.value)
            ).scalar_one()
            unknown = conn.execute(
                sa.select(sa.func.count()).where(c.status == OrderStatus.UNKNOWN.value)
            ).scalar_one()

        f = CounterMetricFamily(
            "runner_fires", "Fires journaled, by state (all daemons).", labels=["daemon", "state"]
        )
        for state in FireState:
            f.add_metric([d, state.value], by_state.get(state, 0))
        yield f

        o = CounterMetricFamily(
            "runner_orders",
            "Orders in a final status, by account and broker.",
            labels=["daemon", "account", "broker", "status"],
        )
        for account, status, n in orders:
            o.add_metric([d, account, self.brokers.get(account, "unknown"), status], n)
        yield o

        yield _gauge(
            "runner_intents_unsettled", "Intents not yet confirmed or absent at the broker.", d, unsettled
        )
        yield _gauge(
            "runner_intents_unknown", "Orders whose outcome is unknown (resolved by lookup).", d, unknown
        )

        control = ControlStore(self.engine).get()
        yield _gauge(
            "runner_halted",
            "1 while the kill switch is engaged (halt or reduce-only).",
            d,
            int(control.halted),
        )
        mode = GaugeMetricFamily(
            "runner_control_mode", "The kill switch mode (1 for the current one).", labels=["daemon", "mode"]
        )
        for m in Mode:
            mode.add_metric([d, m.value], 1 if control.mode is m else 0)
        yield mode

        beat = GaugeMetricFamily(
            "runner_daemon_last_heartbeat_timestamp_seconds",
            "Each daemon's last heartbeat in the journal (Unix time).",
            labels=["daemon", "peer", "host"],
        )
        q = sa.select(daemons.c.daemon_id, daemons.c.host, daemons.c.heartbeat_at).where(
            daemons.c.stopped_at.is_(None)
        )  # not read_daemons: it parses every daemon's status payload (1,000 playbooks: ~7 ms)
        with read(self.engine) as conn:
            for peer, host, at in conn.execute(q):
                beat.add_metric([d, peer, host], at.timestamp())
        yield beat

        age = master_snapshot(self.engine, now)["age_seconds"]
        if age is not None:  # no master_snapshots table yet: no sample rather than a made-up 0
            yield _gauge(
                "runner_master_snapshot_age_seconds", "Age of the newest instrument master snapshot.", d, age
            )


def _gauge(name: str, doc: str, daemon: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["daemon"])
    g.add_metric([daemon], value)
    return g


# Observations waiting for the next scrape: beyond this many the oldest are dropped (no one is scraping).
PENDING_MAX = 100_000


class ProcessMetrics:
    """This process's measurements, fed by :mod:`runner.observability.hooks`. A hook only appends to a
    deque (~0.05 us); the histograms are updated at the next scrape (:meth:`apply`, in the scrape's worker
    thread). Observing at once costs ~4 us a call on the event loop, ~8 ms when 1,000 fires share an
    instant (``bench/scheduler_ops.py``)."""

    def __init__(self, registry: CollectorRegistry, daemon: str) -> None:
        self.daemon = daemon
        self.pending: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque(maxlen=PENDING_MAX)
        self.latency = Histogram(
            "runner_broker_request_seconds",
            "Broker request latency by broker and operation (each attempt).",
            ["daemon", "broker", "operation", "error"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lateness = Histogram(
            "runner_fire_lateness_seconds",
            "How late fires began executing after their scheduled instant (this daemon).",
            ["daemon"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.alerts = Counter(
            "runner_alert_deliveries",
            "Alert delivery attempts by target and result (ok/failed).",
            ["daemon", "target", "result"],
            registry=registry,
        )

    def broker_call(self, broker: str, operation: str, seconds: float, error: str | None) -> None:
        self.pending.append((self._broker_call, (broker, operation, seconds, error)))

    def fire_started(self, playbook: str, lateness: float) -> None:
        self.pending.append((self._fire_started, (lateness,)))

    def alert_delivery(self, target: str, ok: bool) -> None:
        self.pending.append((self._alert_delivery, (target, ok)))

    def apply(self) -> None:
        """Fold the observations recorded since the last scrape into the histograms and counters."""
        while True:
            try:
                record, args = self.pending.popleft()  # atomic: hooks append from any thread meanwhile
            except IndexError:
                return
            record(*args)

    def _broker_call(self, broker: str, operation: str, seconds: float, error: str | None) -> None:
        self.latency.labels(self.daemon, broker, operation, error or "").observe(seconds)

    def _fire_started(self, lateness: float) -> None:
        self.lateness.labels(self.daemon).observe(max(lateness, 0.0))

    def _alert_delivery(self, target: str, ok: bool) -> None:
        self.alerts.labels(self.daemon, target, "ok" if ok else "failed").inc()


class Metrics:
    """The ``/metrics`` registry of one process: :meth:`render` is the exposition text."""

    def __init__(
        self,
        engine: Engine,
        daemon: str,
        brokers: Mapping[str, str] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.journal = JournalCollector(
            engine, daemon, brokers or {}, clock or (lambda: dt.datetime.now(dt.UTC))
        )
        self.registry.register(self.journal)
        self.process = ProcessMetrics(self.registry, daemon)
        self._unsubscribe = hooks.subscribe(self.process)

    def render(self) -> bytes:
        self.process.apply()
        return generate_latest(self.registry)

    def close(self) -> None:
        self._unsubscribe()
