"""Registration points for process-local measurements: the engine, the daemon and the alerts report here;
:mod:`runner.observability.metrics` subscribes when ``/metrics`` is served. With no subscriber every call
is a loop over an empty list, so the fire path pays nothing and imports nothing (no prometheus_client).

Subscribers must be cheap and must not raise into the caller: a failing subscriber is dropped from the
call, never from the order path (its exception is swallowed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol


class Sink(Protocol):
    def broker_call(self, broker: str, operation: str, seconds: float, error: str | None) -> None: ...

    def fire_started(self, playbook: str, lateness: float) -> None: ...

    def alert_delivery(self, target: str, ok: bool) -> None: ...


_sinks: list[Sink] = []


def subscribe(sink: Sink) -> Callable[[], None]:
    """Add ``sink``; returns the function that removes it."""
    _sinks.append(sink)
    return lambda: _sinks.remove(sink) if sink in _sinks else None


def broker_call(broker: str, operation: str, seconds: float, error: str | None = None) -> None:
    """One broker request finished (successfully or with ``error``, the error class name)."""
    for sink in _sinks:
        with contextlib.suppress(Exception):  # a metrics bug never fails an order
            sink.broker_call(broker, operation, seconds, error)


def fire_started(playbook: str, lateness: float) -> None:
    """A fire began executing ``lateness`` seconds after its scheduled instant (negative: early)."""
    for sink in _sinks:
        with contextlib.suppress(Exception):  # a metrics bug never fails an order
            sink.fire_started(playbook, lateness)


def alert_delivery(target: str, ok: bool) -> None:
    """The alerts module's hook: one delivery attempt to ``target`` (an alerts-file target name, never its
    URL, which may hold a token) succeeded or failed."""
    for sink in _sinks:
        with contextlib.suppress(Exception):  # a metrics bug never fails an order
            sink.alert_delivery(target, ok)
