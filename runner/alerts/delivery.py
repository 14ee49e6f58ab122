"""Delivery off the fire path: a bounded queue, one worker thread, dedup, a per-target rate limit.

:meth:`Dispatcher.publish` never blocks and never raises: it puts the alert on a bounded queue (full:
the alert is dropped and counted). The worker thread (not the event loop: apprise's plugins do blocking
I/O) routes each alert, deduplicates (the first of a key goes out at once; repeats within the window are
counted and sent as one message with the count when the window ends), holds messages over a target's rate
limit and sends them later as one digest, and keeps a failed delivery in the journal's outbox
(:mod:`runner.alerts.outbox`) for a later attempt, by this process or the next. Nothing here raises into
a run. :meth:`close` flushes within ``flush_seconds`` and moves what is left to the outbox.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.alerts.config import AlertsConfig
from runner.alerts.events import Alert, Severity
from runner.alerts.outbox import MAX_ATTEMPTS, Message, Outbox
from runner.scrub import scrub

log = logging.getLogger("runner.alerts")

QUEUE_SIZE = 1000
OUTBOX_RETRY = 60.0  # seconds between a worker's attempts at the outbox
DIGEST_LINES = 20  # a digest of held messages names at most this many
HOLD_RETRY = 0.02  # seconds before asking again when the hold could not be read
HOLD_MAX = 5.0  # the longest one hold lasts: a stuck predicate delays alerts, never loses them


class DeliveryFailed(Exception):
    pass


Sender = Callable[[str, Message], None]  # (url, message); raises on failure


def apprise_sender() -> Sender:
    """Sends through apprise: one ``Apprise`` object per URL, built on first use."""
    import apprise

    cache: dict[str, Any] = {}
    kinds = {
        Severity.INFO.value: apprise.NotifyType.INFO,
        Severity.WARNING.value: apprise.NotifyType.WARNING,
        Severity.CRITICAL.value: apprise.NotifyType.FAILURE,
    }

    def send(url: str, message: Message) -> None:
        client = cache.get(url)
        if client is None:
            client = apprise.Apprise(asset=apprise.AppriseAsset(app_id="runner", app_desc="runner alerts"))
            if not client.add(url):
                raise DeliveryFailed("apprise does not understand this target URL")
            cache[url] = client
        if not client.notify(body=message.body, title=message.title, notify_type=kinds[message.severity]):
            raise DeliveryFailed("apprise reported the delivery failed")

    return send


@dataclass
class Counters:
    """Delivery counters, read by metrics (issue 14 §3: ``Dispatcher.counters``; ``snapshot()``)."""

    published: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # target -> messages delivered
    failed: dict[str, int] = field(default_factory=dict)  # target -> deliveries failed
    deduplicated: int = 0  # repeats folded into one message
    rate_limited: int = 0  # messages held by a target's rate limit
    dropped: int = 0  # the queue was full
    outboxed: int = 0  # kept in the journal for later
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, target: str | None = None, n: int = 1) -> None:
        if target is not None and name in ("sent", "failed"):
            from runner.observability import hooks

            for _ in range(n):  # /metrics: runner_alert_deliveries{target,result}
                hooks.alert_delivery(target, name == "sent")
        with self._lock:
            if target is None:
                setattr(self, name, getattr(self, name) + n)
            else:
                per: dict[str, int] = getattr(self, name)
                per[target] = per.get(target, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "published": self.published,
                "sent": dict(self.sent),
                "failed": dict(self.failed),
                "deduplicated": self.deduplicated,
                "rate_limited": self.rate_limited,
                "dropped": self.dropped,
                "outboxed": self.outboxed,
            }


@dataclass
class _Window:
    first_at: dt.datetime
    alert: Alert
    repeats: int = 0


class _Bucket:
    """Token bucket: ``per_minute`` messages a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, now: dt.datetime) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.at = now

    def take(self, now: dt.datetime) -> bool:
        elapsed = max(0.0, (now - self.at).total_seconds())
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def _system_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Dispatcher:
    def __init__(
        self,
        config: AlertsConfig,
        *,
        outbox: Outbox | None = None,
        sender: Sender | None = None,
        now: Callable[[], dt.datetime] = _system_now,
        maxsize: int = QUEUE_SIZE,
        tick: float = 0.5,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.send: Sender = sender or apprise_sender()
        self.now = now
        self.counters = Counters()
        self.tick = tick
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._windows: dict[str, _Window] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._held: dict[str, list[Message]] = {}  # target -> messages over its rate limit
        self._inflight: list[Message] = []
        self._abort = False
        self._thread: threading.Thread | None = None
        self._hold: Callable[[], float] | None = None

    # --- the publishing side (any thread, the event loop included): never blocks, never raises ---------

    def publish(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.counters.add("dropped")
            log.warning("alert queue full: %s dropped", alert.event.value)
        else:
            self.counters.add("published")

    def hold_while(self, remaining: Callable[[], float]) -> None:
        """Work only when ``remaining()`` (seconds to hold off) is 0: ``runner serve`` passes the daemon's
        quiet window around fire instants. Rendering and sending take the GIL from the event loop in 5 ms
        slices; alerts published by the first fires of an instant would otherwise delay the fires still
        being released. ``remaining`` runs in the worker."""
        self._hold = remaining

    def _wait_until_idle(self) -> None:
        remaining = self._hold
        if remaining is None:
            return
        deadline = time.monotonic() + HOLD_MAX
        while (left := deadline - time.monotonic()) > 0 and not self._abort:
            try:
                hold = remaining()
            except Exception:  # read across threads: a mapping resized under us; ask again shortly
                hold = HOLD_RETRY
            if hold <= 0:
                return
            time.sleep(min(hold, left))

    def start(self) -> Dispatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="runner-alerts", daemon=True)
            self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Until everything published so far was handled (sent, held, or kept in the outbox), and windows
        already over were summarised. False on timeout."""
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then the dedup summaries and held digests, within ``timeout`` (default the
        config's ``flush_seconds``); whatever is still unsent goes to the outbox for the next process."""
        limit = self.config.flush_seconds if timeout is None else timeout
        thread = self._thread
        if thread is None:
            self._run_until_empty(final=True)
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=limit)
        thread.join(limit)
        if thread.is_alive():  # a slow target: keep the rest for the next process
            self._abort = True
            log.warning("alerts not delivered within %.1fs; kept in the journal for the next process", limit)
            left = self._inflight + [m for ms in self._held.values() for m in ms]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Alert):
                    left += self._render(item, 1)
            for window in self._windows.values():
                if window.repeats:
                    left += self._summary(window)
            self._keep(left, "not delivered before the process exited")
        self._thread = None

    # --- the worker ------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._drain_outbox()
        retried = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.tick)
            except queue.Empty:
                self._wait_until_idle()
                self._housekeeping(final=False)
                if time.monotonic() - retried > OUTBOX_RETRY:  # a long-lived daemon retries its outbox
                    retried = time.monotonic()
                    self._drain_outbox()
                continue
            if item is _STOP:
                self._run_until_empty(final=True)
                return
            self._wait_until_idle()
            self._handle(item)

    def _run_until_empty(self, *, final: bool) -> None:
        while not self._abort:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._handle(item)
        if not self._abort:
            self._housekeeping(final=final)

    def _handle(self, item: Any) -> None:
        try:
            if isinstance(item, _Flush):
                self._housekeeping(final=False)
                item.done.set()
            else:
                self._alert(item)
        except Exception:  # an alert must never take the worker down
            log.exception("alert handling failed")
            if isinstance(item, _Flush):
                item.done.set()

    def _alert(self, alert: Alert) -> None:
        now = self.now()
        key = alert.dedup_key
        window = self._windows.get(key)
        if window is not None and now - window.first_at < self.config.dedup_window:
            window.repeats += 1
            window.alert = alert
            self.counters.add("deduplicated")
            return
        if window is not None and window.repeats:
            self._deliver(self._summary(window), now)
        self._windows[key] = _Window(now, alert)
        self._deliver(self._render(alert, 1), now)

    def _summary(self, window: _Window) -> list[Message]:
        return self._render(window.alert, window.repeats, repeats=True)

    def _render(self, alert: Alert, count: int, *, repeats: bool = False) -> list[Message]:
        title = scrub(alert.title())
        body = alert.body(count)
        if repeats:
            body = f"{count} more since the first message:\n{body}"
        body = scrub(body)
        return [
            Message(target, alert.event.value, alert.severity.value, title, body, alert.at)
            for target in self.config.targets_for(alert)
        ]

    def _housekeeping(self, *, final: bool) -> None:
        now = self.now()
        for key, window in list(self._windows.items()):
            over = now - window.first_at >= self.config.dedup_window
            if over or final:
                if window.repeats:
                    self._deliver(self._summary(window), now)
                if over:
                    del self._windows[key]
                else:
                    window.repeats = 0
        for target in list(self._held):
            self._send_held(target, now, final=final)

    def _bucket(self, target: str, now: dt.datetime) -> _Bucket:
        bucket = self._buckets.get(target)
        if bucket is None:
            bucket = self._buckets[target] = _Bucket(self.config.per_minute, now)
        return bucket

    def _deliver(self, messages: list[Message], now: dt.datetime) -> None:
        for m in messages:
            held = self._held.get(m.target)
            if held or not self._bucket(m.target, now).take(now):
                self._held.setdefault(m.target, []).append(m)
                self.counters.add("rate_limited")
                continue
            self._send_one(m)

    def _send_held(self, target: str, now: dt.datetime, *, final: bool) -> None:
        held = self._held.get(target)
        if not held:
            self._held.pop(target, None)
            return
        if not self._bucket(target, now).take(now):
            if final:  # no token left before exit: the next process sends them
                self._keep(self._held.pop(target), "held by the rate limit at exit")
            return
        del self._held[target]
        self._send_one(held[0] if len(held) == 1 else _digest(target, held))

    def _send_one(self, message: Message) -> bool:
        url = self.config.targets.get(message.target)
        if url is None:  # a target gone from the file: its outbox rows are given up
            return False
        self._inflight = [message]
        try:
            self.send(url, message)
        except Exception as exc:
            self.counters.add("failed", message.target)
            why = scrub(f"{type(exc).__name__}: {exc}")
            log.warning("alert to %s failed (%s): %s", message.target, message.event, why)
            if not self._abort:
                self._keep([message], why)
            return False
        finally:
            self._inflight = []
        self.counters.add("sent", message.target)
        return True

    def _keep(self, messages: list[Message], why: str) -> None:
        if not messages:
            return
        if self.outbox is None:
            log.warning("%d alert(s) lost (no journal for the outbox): %s", len(messages), why)
            return
        try:
            self.outbox.put(messages, why)
            self.counters.add("outboxed", n=len(messages))
        except Exception as exc:
            log.error("%d alert(s) lost: the outbox could not be written: %s", len(messages), exc)

    def _drain_outbox(self) -> None:
        """Messages earlier processes (or earlier attempts) could not deliver: one try each, now."""
        if self.outbox is None:
            return
        try:
            pending = self.outbox.pending()
        except Exception as exc:
            log.warning("alert outbox unreadable: %s", exc)
            return
        done: list[int] = []
        for m in pending:
            assert m.row_id is not None
            url = self.config.targets.get(m.target)
            if url is None or m.attempts >= MAX_ATTEMPTS:
                log.warning("alert %s to %s given up after %d attempts", m.event, m.target, m.attempts)
                done.append(m.row_id)
                continue
            try:
                self.send(url, m)
            except Exception as exc:
                self.counters.add("failed", m.target)
                try:
                    self.outbox.put([m], scrub(f"{type(exc).__name__}: {exc}"))
                except Exception:
                    log.exception("alert outbox not updated")
            else:
                self.counters.add("sent", m.target)
                done.append(m.row_id)
        try:
            self.outbox.delete(done)
        except Exception:
            log.exception("alert outbox not updated")


def _digest(target: str, held: list[Message]) -> Message:
    """Messages held by the rate limit, as one."""
    worst = max(held, key=lambda m: Severity(m.severity).rank)
    lines = [f"{len(held)} alerts held by the rate limit:"]
    lines += [f"- {m.title}" for m in held[:DIGEST_LINES]]
    if len(held) > DIGEST_LINES:
        lines.append(f"... and {len(held) - DIGEST_LINES} more (see the logs)")
    lines.append("")
    lines.append(held[-1].body)
    return Message(
        target,
        "digest",
        worst.severity,
        f"[{worst.severity.upper()}] {len(held)} alerts",
        "\n".join(lines),
        held[0].created_at,
    )
