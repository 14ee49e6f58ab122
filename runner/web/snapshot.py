"""One builder for what ``runner status --json``, the status page and its JSON API show: everything read
from the journal database (every daemon of an HA pair writes its status there each second), so any
process shows the same picture. Cheap queries only: the page is built on every refresh.

The keys of :func:`build_status` are a contract (``runner status --json`` scripts and tests read them);
add keys, never rename."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.tables import Resolution, order_intents, runs
from runner.model import TERMINAL, OrderStatus

STALE = dt.timedelta(seconds=5)  # a daemon silent this long is reported as not running
RECENT_RUNS = 50
TODAY_FIRES = 200
LIVE_INTENTS = 200
SKIP_HORIZON = 7  # days ahead in which a playbook's closed days are listed
POSITIONS_NOTE = "n/a on this page yet: `runner positions` (issue 14 §4) reads them through the adapters"


def build_status(
    engine: Engine,
    now: dt.datetime | None = None,
    *,
    calendars: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """The status of everything the journal knows. ``calendars``: exchange -> calendar (default: the
    packaged calendars with ``$RUNNER_CALENDARS`` overrides)."""
    from runner.daemon.scale_status import scale_view
    from runner.engine.killswitch import ControlStore
    from runner.journal.fires import FireStore, read_daemons
    from runner.journal.records import dead_holder
    from runner.journal.store import Journal

    now = now or dt.datetime.now(dt.UTC)
    daemons: list[dict[str, Any]] = []
    for d in read_daemons(engine):
        alive = d["stopped_at"] is None and now - d["heartbeat_at"] < STALE
        if not alive and daemons:
            continue  # show only the most recent dead one, for "when did it stop"
        status = d["status"]
        daemons.append(
            {
                "daemon_id": d["daemon_id"],
                "host": d["host"],
                "pid": d["pid"],
                "alive": alive,
                "playbook_dir": d["playbook_dir"],
                "heartbeat_at": d["heartbeat_at"].isoformat(),
                "stopped_at": d["stopped_at"].isoformat() if d["stopped_at"] else None,
                "playbooks": status.get("playbooks", {}),
                "running": status.get("running", []),
                "invalid": status.get("invalid", {}),
            }
        )
    live = [d for d in daemons if d["alive"]]
    running = [r for d in live for r in d["running"]]
    journal = Journal(engine=engine)
    _add_current_steps(journal, running)
    store = FireStore(engine, owner="status")  # read-only use
    last = {
        name: {
            "scheduled_for": r.scheduled_for.isoformat(),
            "state": r.state.value,
            "outcome": r.outcome,
            "run_id": r.run_id,
            "timezone": _run_zone(journal, r.run_id),
        }
        for name, r in sorted(store.last_outcomes().items())
    }
    next_fires: dict[str, Any] = {}
    for d in live:
        for name, info in d["playbooks"].items():
            if name not in next_fires or (info["next_fire"] or "~") < (next_fires[name]["next_fire"] or "~"):
                next_fires[name] = info
    control = ControlStore(engine)
    dead = [
        {
            "run_id": r.run_id,
            "playbook": r.playbook,
            "account": r.account,
            "started_at": r.started_at.isoformat(),
            "timezone": r.timezone,
            "why": dead_holder(r),
        }
        for r in journal.dead_runs()
    ]  # read-only: closed by the account's next run, apply or serve
    load = calendars or _default_calendars
    zones = [i.get("timezone") for i in next_fires.values()] + [v["timezone"] for v in last.values()]
    return {
        "now": now.isoformat(),
        "timezone": display_zone(engine, zones).key,  # of the times that are no one playbook's
        "dead_runs": dead,
        "control": control.get().as_dict(),
        "halt_cancels": [p.as_dict() for p in control.last_passes()],
        "daemons": daemons,
        "next_fires": dict(sorted(next_fires.items())),
        "running": running,
        "last_outcomes": last,
        **scale_view(engine, daemons),  # members, what each owns, claims in flight (issue 16)
        # --- the status page's additions (issue 14 §2) ---
        "playbooks": _playbooks(next_fires, last, now, load),
        "today_fires": _today_fires(engine, now),
        "intents": _live_intents(engine),
        "recent_runs": _recent_runs(engine),
        "calendars": _calendar_coverage(next_fires, now, load),
        "master_snapshot": master_snapshot(engine, now),
        "positions": _positions(engine, now),
    }


def display_zone(engine: Any, playbook_zones: Iterable[str | None] = ()) -> Any:
    """Zone for times that are no one playbook's (the kill switch, heartbeats, cancel passes): the one
    the running daemons' playbooks and the journal's recent runs share, else UTC; named either way."""
    from runner.journal.store import Journal
    from runner.timefmt import shared_zone

    recent = [r.timezone for r in Journal(engine=engine).list_runs(limit=50)]
    return shared_zone([*playbook_zones, *recent])


def _run_zone(journal: Any, run_id: str | None) -> str | None:
    run = journal.get_run(run_id) if run_id else None
    return run.timezone if run is not None else None


def _add_current_steps(journal: Any, running: list[dict[str, Any]]) -> None:
    for r in running:
        steps = journal.steps_of(r["run_id"])
        current = [s.step_id for s in steps.values() if s.finished_at is None]
        r["current_step"] = current[0] if current else None
        r["steps_done"] = sum(1 for s in steps.values() if s.finished_at is not None)


def _default_calendars(exchange: str) -> Any:
    from runner.trading_calendars import load_calendar

    return load_calendar(exchange)  # cached per exchange: cheap after the first page


def local_text(iso: str | None, zone: str | None) -> str | None:
    """An ISO instant as a person reads it in ``zone`` (its name shown); UTC without a zone."""
    if iso is None:
        return None
    tz = ZoneInfo(zone) if zone else dt.UTC
    return dt.datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S ") + (zone or "UTC")


def _playbooks(
    next_fires: dict[str, Any], last: dict[str, Any], now: dt.datetime, load: Callable[[str], Any]
) -> list[dict[str, Any]]:
    """Every scheduled playbook (and every one with a journaled fire): its next fire in its own zone and
    the closed days its calendar skips in the coming week."""
    out = []
    skipped: dict[tuple[str | None, str | None], list[str]] = {}  # a few calendars and zones, many playbooks
    for name in sorted(set(next_fires) | set(last)):
        info = next_fires.get(name) or {}
        zone = info.get("timezone")
        key = (info.get("calendar"), zone)
        if key not in skipped:
            skipped[key] = _skipped_days(key[0], zone, now, load)
        out.append(
            {
                "name": name,
                "timezone": zone,
                "calendar": info.get("calendar"),
                "next_fire": info.get("next_fire"),
                "next_fire_local": local_text(info.get("next_fire"), zone),
                "skipped_days": skipped[key],
                "last": last.get(name),
                "scheduled": name in next_fires,
            }
        )
    return out


def _skipped_days(
    calendar: str | None, zone: str | None, now: dt.datetime, load: Callable[[str], Any]
) -> list[str]:
    if not calendar or not zone:
        return []
    try:
        cal = load(calendar)
    except Exception as exc:  # a broken calendar fails closed: every day is skipped
        return [f"calendar {calendar} unavailable: {exc}"]
    today = now.astimezone(ZoneInfo(zone)).date()
    skipped = []
    for i in range(SKIP_HORIZON):
        day = today + dt.timedelta(days=i)
        if not cal.covers(day):
            skipped.append(f"{day} (not covered: fail closed)")
        elif not cal.is_trading_day(day):
            why = getattr(cal, "holidays", {}).get(day) or "closed"
            skipped.append(f"{day} ({why})")
    return skipped


def _calendar_coverage(
    next_fires: dict[str, Any], now: dt.datetime, load: Callable[[str], Any]
) -> list[dict[str, Any]]:
    names = sorted({i["calendar"] for i in next_fires.values() if i.get("calendar")})
    out = []
    for name in names:
        try:
            cal = load(name)
        except Exception as exc:
            out.append({"calendar": name, "valid_to": None, "days_left": None, "error": str(exc)})
            continue
        valid_to = getattr(cal, "valid_to", None)
        days = (valid_to - now.astimezone(cal.tz).date()).days if valid_to else None
        out.append({"calendar": name, "valid_to": valid_to and valid_to.isoformat(), "days_left": days})
    return out


def _today_fires(engine: Engine, now: dt.datetime) -> list[dict[str, Any]]:
    """The fires of the last 24 hours, newest first (one query on the (playbook, scheduled_for) index's
    leading column would not help: scheduled_for alone, bounded by LIMIT)."""
    from runner.journal.fires import fires, read

    q = (
        sa.select(fires.c.playbook, fires.c.scheduled_for, fires.c.state, fires.c.outcome, fires.c.run_id)
        .where(fires.c.scheduled_for > now - dt.timedelta(days=1), fires.c.scheduled_for <= now)
        .order_by(fires.c.scheduled_for.desc())
        .limit(TODAY_FIRES)
    )
    with read(engine) as conn:
        return [
            {
                "playbook": r.playbook,
                "scheduled_for": r.scheduled_for.isoformat(),
                "state": r.state.value,
                "outcome": r.outcome,
                "run_id": r.run_id,
            }
            for r in conn.execute(q)
        ]


def _live_intents(engine: Engine) -> list[dict[str, Any]]:
    """Orders working at the broker, and intents whose outcome is not settled (pending or unknown)."""
    from runner.journal.fires import read

    c = order_intents.c
    unsettled_states = [s.value for s in OrderStatus if s not in TERMINAL]  # IN, not NOT IN: uses the index
    q = (
        sa.select(
            c.client_order_id,
            c.run_id,
            c.account,
            c.step_id,
            c.instrument_key,
            c.side,
            c.quantity,
            c.order_type,
            c.price,
            c.status,
            c.resolution,
            c.filled_quantity,
            c.updated_at,
        )
        .where(sa.or_(c.status.in_(unsettled_states), c.resolution == Resolution.PENDING.value))
        .order_by(c.updated_at.desc())
        .limit(LIVE_INTENTS)
    )
    with read(engine) as conn:
        return [
            {
                "client_order_id": r.client_order_id,
                "run_id": r.run_id,
                "account": r.account,
                "step_id": r.step_id,
                "instrument": r.instrument_key,
                "side": r.side,
                "quantity": r.quantity,
                "order_type": r.order_type,
                "price": None if r.price is None else str(r.price),
                "status": r.status,
                "resolution": r.resolution,
                "filled_quantity": r.filled_quantity,
                "unsettled": r.resolution == Resolution.PENDING.value
                or r.status == OrderStatus.UNKNOWN.value,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in conn.execute(q)
        ]


def _recent_runs(engine: Engine) -> list[dict[str, Any]]:
    from runner.journal.fires import read

    c = runs.c
    q = (
        sa.select(
            c.run_id,
            c.playbook,
            c.account,
            c.status,
            c.scheduled_for,
            c.started_at,
            c.finished_at,
            c.timezone,
            c.message,
        )
        .order_by(c.started_at.desc(), c.run_id)
        .limit(RECENT_RUNS)
    )
    with read(engine) as conn:
        return [
            {
                "run_id": r.run_id,
                "playbook": r.playbook,
                "account": r.account,
                "status": r.status,
                "timezone": r.timezone or "UTC",
                "scheduled_for": r.scheduled_for.isoformat(),
                "started_at": r.started_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "message": r.message,
            }
            for r in conn.execute(q)
        ]


def master_snapshot(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """The age of each account's newest good instrument-master snapshot (``runner instruments sync``), and
    of the stalest of them (``age_seconds``: what a desk must act on); None ("n/a") when none was synced."""
    from runner.instruments.index import SnapshotStatus, master_snapshots
    from runner.journal.fires import read

    t = master_snapshots
    with read(engine) as conn:
        rows = conn.execute(
            sa.select(t.c.account, sa.func.max(t.c.created_at))
            .where(t.c.status == SnapshotStatus.GOOD.value)
            .group_by(t.c.account)
        ).all()
    newest = {account: at if at.tzinfo else at.replace(tzinfo=dt.UTC) for account, at in rows if at}
    if not newest:
        return {"age_seconds": None, "at": None, "accounts": {}}
    stalest = min(newest.values())
    return {
        "age_seconds": int((now - stalest).total_seconds()),
        "at": stalest.isoformat(),
        "accounts": {a: int((now - at).total_seconds()) for a, at in sorted(newest.items())},
    }


def _positions(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """The spot for positions and P&L per account. Not derived here: summing a day's fills joined to their
    intents costs ~40 ms per 10,000 fills on every refresh, and the broker's book is the truth;
    ``runner positions`` (issue 14 §4) reads it through the adapters and fills ``rows``."""
    return {"available": False, "rows": [], "note": POSITIONS_NOTE}


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)
