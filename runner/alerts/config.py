"""The alerts file: targets (apprise URLs), routes, dedup, rate limit, heartbeat and check thresholds.

Lookup order mirrors the accounts file (:func:`runner.accounts.find_accounts_file`): ``--alerts FILE``,
``$RUNNER_ALERTS``, ``./alerts.yaml``, ``~/.config/runner/alerts.yaml``; none found: alerts are off.
A target's URL usually holds a token (a bot token, a webhook secret), so it may be a ``{env: VAR}`` /
``{file: PATH}`` reference, resolved like an account's credential; every URL, given inline or not, is
registered with :mod:`runner.scrub` so it never reaches a log line, the journal or an alert.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.alerts.events import Alert, AlertEvent, Severity
from runner.scrub import register

ENV_VAR = "RUNNER_ALERTS"
DEFAULT_PATHS = (Path("alerts.yaml"), Path("~/.config/runner/alerts.yaml"))


class AlertsConfigError(ValueError):
    """The alerts file is invalid or a target cannot be resolved (exit 1 / 5 by the caller)."""


@dataclass(frozen=True)
class Route:
    targets: tuple[str, ...]
    events: frozenset[AlertEvent] | None = None
    min_severity: Severity | None = None
    playbooks: frozenset[str] | None = None
    accounts: frozenset[str] | None = None

    def matches(self, alert: Alert) -> bool:
        return (
            (self.events is None or alert.event in self.events)
            and (self.min_severity is None or alert.severity.rank >= self.min_severity.rank)
            and (self.playbooks is None or alert.playbook in self.playbooks)
            and (self.accounts is None or alert.account in self.accounts)
        )


@dataclass(frozen=True)
class Thresholds:
    unknown_outcome: dt.timedelta = dt.timedelta(seconds=60)
    square_off_before_close: dt.timedelta = dt.timedelta(minutes=10)
    calendar_coverage_days: int = 10


@dataclass(frozen=True)
class AlertsConfig:
    targets: dict[str, str]  # name -> apprise URL (resolved; registered for scrubbing)
    routes: tuple[Route, ...] = ()
    dedup_window: dt.timedelta = dt.timedelta(minutes=5)
    per_minute: int = 20
    heartbeat_url: str | None = None
    heartbeat_every: dt.timedelta = dt.timedelta(seconds=60)
    thresholds: Thresholds = field(default_factory=Thresholds)
    flush_seconds: float = 5.0
    source: str | None = None

    def targets_for(self, alert: Alert) -> tuple[str, ...]:
        """Target names ``alert`` goes to: every target without routes (a TEST alert: every target)."""
        if not self.routes or alert.event is AlertEvent.TEST:
            return tuple(self.targets)
        out: dict[str, None] = {}
        for route in self.routes:
            if route.matches(alert):
                out.update(dict.fromkeys(t for t in route.targets if t in self.targets))
        return tuple(out)


def find_alerts_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    from runner.accounts import find_config_file  # the lookup the accounts file uses

    return find_config_file(explicit, ENV_VAR, DEFAULT_PATHS)


def _resolve(value: object, where: str) -> str:
    """A target: the URL itself or a SecretRef to it, registered for scrubbing either way."""
    if isinstance(value, str):
        url = value
    else:
        from pydantic import ValidationError

        from runner.accounts import SecretRef

        try:
            ref = SecretRef.model_validate(value)
            url = ref.resolve().reveal()
        except (ValidationError, LookupError) as exc:
            raise AlertsConfigError(f"{where}: {exc}") from None
    register(url)
    # a URL's path and password are where apprise services carry tokens: registered on their own too
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if "." not in host and not host.startswith(("localhost", "[")):  # tgram://{bot_token}/..: a token
        register(host)
    register(parts.password)
    register(parts.path.strip("/"))
    for piece in parts.path.split("/"):
        register(piece)
    return url


def parse_config(doc: dict[str, Any], source: str | None = None) -> AlertsConfig:
    """The config from a schema-valid document (``runner validate`` reports positioned errors first)."""
    from runner.playbook.durations import parse_duration

    raw_targets = doc.get("targets") or {}
    assert isinstance(raw_targets, dict)
    targets = {name: _resolve(v, f"targets.{name}") for name, v in raw_targets.items()}
    routes = []
    for i, r in enumerate(doc.get("routes") or []):
        unknown = [t for t in r["targets"] if t not in targets]
        if unknown:
            raise AlertsConfigError(f"routes[{i}]: unknown target(s) {', '.join(unknown)}")
        routes.append(
            Route(
                targets=tuple(r["targets"]),
                events=frozenset(AlertEvent(e) for e in r["events"]) if "events" in r else None,
                min_severity=Severity(r["min_severity"]) if "min_severity" in r else None,
                playbooks=frozenset(r["playbooks"]) if "playbooks" in r else None,
                accounts=frozenset(r["accounts"]) if "accounts" in r else None,
            )
        )
    dedup = doc.get("dedup") or {}
    rate = doc.get("rate_limit") or {}
    beat = doc.get("heartbeat") or {}
    th = doc.get("thresholds") or {}
    assert isinstance(dedup, dict) and isinstance(rate, dict) and isinstance(beat, dict)
    assert isinstance(th, dict)
    return AlertsConfig(
        targets=targets,
        routes=tuple(routes),
        dedup_window=parse_duration(str(dedup.get("window", "5m"))),
        per_minute=int(rate.get("per_minute", 20)),
        heartbeat_url=_resolve(beat["url"], "heartbeat.url") if "url" in beat else None,
        heartbeat_every=parse_duration(str(beat.get("every", "60s"))),
        thresholds=Thresholds(
            unknown_outcome=dt.timedelta(seconds=int(th.get("unknown_outcome_seconds", 60))),
            square_off_before_close=dt.timedelta(minutes=int(th.get("square_off_minutes_before_close", 10))),
            calendar_coverage_days=int(th.get("calendar_coverage_days", 10)),
        ),
        flush_seconds=float(str(doc.get("flush_seconds", 5))),
        source=source,
    )


def load_alerts(explicit: str | os.PathLike[str] | None = None) -> AlertsConfig | None:
    """The alerts config found by the lookup order, validated (file:line:col errors raise
    :class:`AlertsConfigError`); None when there is no alerts file."""
    path = find_alerts_file(explicit)
    if path is None:
        return None
    from runner.playbook.validate import validate_alerts_file

    report = validate_alerts_file(path)
    if not report.ok:
        raise AlertsConfigError("\n".join(d.format() for d in report.errors))
    return parse_config(report.value, str(path))
