"""The scheduling daemon behind ``runner serve``.

Fire times are computed here, in the playbook's IANA zone, from *wall-clock* candidates mapped to instants:
an ambiguous wall time (autumn fall-back) fires once, at its first occurrence; a wall time that does not
exist (spring-forward gap) fires once, when the gap ends. (APScheduler 3.x's CronTrigger fires the
fall-back hour twice, so it is only used as a zone-free cron field parser.)

APScheduler (AsyncIOScheduler) holds one date job per playbook, due ``lead`` seconds before the instant.
The job claims the fire in the journal (:mod:`runner.fires`, exactly once across daemons), checks the
calendar (fail closed: closed days and times outside the day's sessions are skipped) and the kill switch,
re-arms the next fire, lets the executor *prepare* the run (open it, connect, reconcile, build and
risk-check the first order), then awaits the instant (one precise ``clock.sleep_until`` shared by every
fire due then) and executes: at the instant only a group commit of the first intents stands between the
clock and the requests (:mod:`runner.groupcommit`). A halt or shutdown between preparing and the instant
abandons the prepared run: nothing is sent. The daemon's own database work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from runner.clock import Clock, SystemClock
from runner.control import ControlState, ControlStore, ControlWatcher, Mode, cancel_open_orders
from runner.fires import Claim, ClaimBatcher, FireRow, FireState, FireStore
from runner.ids import fire_id as make_fire_id
from runner.ids import run_id as make_run_id
from runner.playbook import Playbook, Schedule, parse_duration, parse_time

log = logging.getLogger("runner.scheduler")

ON_TIME = dt.timedelta(seconds=1)  # later than this after the instant, the ``late`` policy decides
CATCH_UP_WINDOW = dt.timedelta(days=7)
QUIET = 0.2  # seconds around an instant kept free of background work (reload scan, heartbeat)
CATCH_UP_MAX = 10_000  # slots listed per playbook in a catch-up report
PLAYBOOK_SUFFIXES = (".yaml", ".yml")
_DOW = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_CRON_DOW = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


# --- wall time -> instant ------------------------------------------------------------------------


def localize(wall: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of a naive local wall time: first occurrence if ambiguous, gap end if missing."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # Inside a spring-forward gap: fold=0 reads it with the old offset (the later instant), fold=1 with
    # the new one (the earlier). The transition lies between them; find it to the second.
    lo = int(wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC).timestamp())
    hi = math.ceil(first.timestamp())
    after = first.astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, dt.UTC)


class Rule:
    """Fire times of one schedule. Subclasses yield naive wall times >= ``start`` in order."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        raise NotImplementedError

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """First fire instant strictly after ``after`` (aware), as aware UTC."""
        start = after.astimezone(self.tz).replace(tzinfo=None, microsecond=0)
        for wall in self.walls_from(start):
            instant = localize(wall, self.tz)
            if instant > after:
                return instant
        return None

    def between(self, since: dt.datetime, until: dt.datetime, limit: int = CATCH_UP_MAX) -> list[dt.datetime]:
        """Fire instants in ``(since, until]``, at most ``limit`` (the latest ones)."""
        out: list[dt.datetime] = []
        t = since
        while (nxt := self.next_after(t)) is not None and nxt <= until:
            out.append(nxt)
            t = nxt
            if len(out) > limit:
                out.pop(0)
        return out


def _dates(start: dt.date, days: frozenset[int] | None, horizon: int = 800) -> Iterator[dt.date]:
    for i in range(horizon):
        d = start + dt.timedelta(days=i)
        if days is None or d.weekday() in days:
            yield d


class DailyRule(Rule):
    def __init__(self, tz: ZoneInfo, at: dt.time, days: frozenset[int] | None) -> None:
        super().__init__(tz)
        self.at, self.days = at, days

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        for d in _dates(start.date(), self.days):
            wall = dt.datetime.combine(d, self.at)
            if wall >= start:
                yield wall


class IntervalRule(Rule):
    """Every ``every`` from the window start to its end (inclusive); the grid restarts each day."""

    def __init__(
        self,
        tz: ZoneInfo,
        every: dt.timedelta,
        window: tuple[dt.time, dt.time] | None,
        days: frozenset[int] | None,
    ) -> None:
        super().__init__(tz)
        if every <= dt.timedelta(0):
            raise ValueError("every must be positive")
        if window is not None and window[1] <= window[0]:
            raise ValueError(f"between {window[0]:%H:%M}-{window[1]:%H:%M}: the end must be after the start")
        self.every, self.window, self.days = every, window, days

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        for d in _dates(start.date(), self.days):
            if self.window is None:
                ws = dt.datetime.combine(d, dt.time())
                we = ws + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
            else:
                ws, we = dt.datetime.combine(d, self.window[0]), dt.datetime.combine(d, self.window[1])
            if start > we:
                continue
            k = max(0, math.ceil((start - ws) / self.every))
            wall = ws + k * self.every
            while wall <= we:
                yield wall
                wall += self.every


class CronRule(Rule):
    """Standard 5-field crontab (0 or 7 = Sunday), evaluated on local wall time."""

    def __init__(self, tz: ZoneInfo, expr: str) -> None:
        super().__init__(tz)
        from apscheduler.triggers.cron import CronTrigger

        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday)")
        fields[4] = _cron_weekdays(fields[4])
        # UTC here only because it has no DST: the trigger enumerates wall times, localize() maps them.
        self.trigger = CronTrigger(
            minute=fields[0],
            hour=fields[1],
            day=fields[2],
            month=fields[3],
            day_of_week=fields[4],
            timezone=dt.UTC,
        )

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        now = start.replace(tzinfo=dt.UTC)
        while (t := self.trigger.get_next_fire_time(None, now)) is not None:
            yield t.replace(tzinfo=None)
            now = t + dt.timedelta(seconds=1)


def _cron_weekdays(text: str) -> str:
    """Crontab weekday numbers (0=Sun) to names: APScheduler 3.x numbers Monday as 0."""
    if not re.search(r"\d", text):
        return text
    days: set[int] = set()
    for term in text.split(","):
        base, _, step_text = term.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, b = base.split("-")
            lo, hi = _cron_day(a), _cron_day(b)
        else:
            lo = hi = _cron_day(base)
            if step_text:
                hi = 6
        if hi < lo:
            raise ValueError(f"cron weekday range {base!r} runs backwards")
        days.update(range(lo, hi + 1, step))
    return ",".join(_CRON_DOW[d] for d in sorted({d % 7 for d in days}))


def _cron_day(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in _CRON_DOW:
        return _CRON_DOW.index(token[:3])
    raise ValueError(f"cron weekday {token!r} is not 0-7 or a day name")


class OnceRule(Rule):
    def __init__(self, tz: ZoneInfo, when: dt.datetime) -> None:
        super().__init__(tz)
        self.instant = localize(when, tz) if when.tzinfo is None else when.astimezone(dt.UTC)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        return self.instant if self.instant > after else None


def build_rule(schedule: Schedule, timezone: str) -> Rule:
    tz = ZoneInfo(timezone)
    days = frozenset(_DOW[d] for d in schedule.days) if schedule.days else None
    kinds = [k for k in ("daily", "cron", "every", "once") if getattr(schedule, k) is not None]
    if len(kinds) != 1:
        raise ValueError(f"schedule needs exactly one of daily, cron, every, once (got {kinds or 'none'})")
    if schedule.daily is not None:
        return DailyRule(tz, parse_time(schedule.daily), days)
    if schedule.cron is not None:
        return CronRule(tz, schedule.cron)
    if schedule.every is not None:
        window = None
        if schedule.between is not None:
            window = (parse_time(schedule.between[0]), parse_time(schedule.between[1]))
        return IntervalRule(tz, parse_duration(schedule.every), window, days)
    assert schedule.once is not None
    return OnceRule(tz, schedule.once)


def late_window(schedule: Schedule) -> dt.timedelta | None:
    """``None`` for ``late: skip``; the allowed lateness for ``late: run-within <duration>``."""
    if schedule.late == "skip":
        return None
    return parse_duration(schedule.late.split(None, 1)[1])


# --- loading playbooks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    path: Path
    version: str  # sha256 of the file content (first 16 hex)
    playbook: Playbook | None
    errors: tuple[str, ...] = ()


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def load_playbook_file(path: Path, accounts: Any = None) -> Loaded:
    """Read, validate (:mod:`runner.validate`: schema + semantics) and model one playbook file.
    ``accounts`` is :func:`runner.validate.account_names`' result; None skips the account check."""
    from runner.validate import playbook_from_report, validate_text

    try:
        data = path.read_bytes()
    except OSError as exc:
        return Loaded(path, "", None, (f"{path}: cannot read: {exc.strerror}",))
    version = content_version(data)
    report = validate_text(data.decode("utf-8", errors="replace"), str(path), accounts)
    if not report.ok:
        return Loaded(path, version, None, tuple(d.format() for d in report.errors))
    try:
        playbook = playbook_from_report(report)
        if playbook.schedule is not None:
            build_rule(playbook.schedule, playbook.timezone)
            late_window(playbook.schedule)
    except ValueError as exc:
        return Loaded(path, version, None, (f"{path}: {exc}",))
    return Loaded(path, version, playbook)


# --- calendars ------------------------------------------------------------------------------------


class Calendar(Protocol):
    def covers(self, day: dt.date) -> bool: ...

    def is_trading_day(self, day: dt.date) -> bool: ...


CalendarLoader = Callable[[str], Calendar]


def default_calendar_loader(overrides_dir: str | None = None) -> CalendarLoader:
    def load(exchange: str) -> Calendar:
        from runner.calendars import load_calendar

        return load_calendar(exchange, overrides_dir=overrides_dir)

    return load


# --- the executor seam ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fire:
    playbook: Playbook
    path: Path
    version: str
    scheduled_for: dt.datetime  # aware UTC
    run_id: str
    fire_id: str


@dataclass(frozen=True)
class FireResult:
    state: FireState  # SUCCEEDED, FAILED or UNKNOWN
    outcome: str | None = None


Executor = Callable[[Fire], Awaitable[FireResult]]


class PreparedFire(Protocol):
    """A fire readied ahead of its instant (see :meth:`EngineExecutor.prepare`)."""

    async def run(self) -> FireResult: ...

    async def abandon(self, reason: str, halted: bool) -> None:
        """Not run after all (halted, or shutting down before the instant): nothing was sent."""


# --- the daemon -----------------------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    path: Path
    version: str
    playbook: Playbook
    rule: Rule
    late: dt.timedelta | None
    next_fire: dt.datetime | None = None
    armed_for: dt.datetime | None = None  # latest instant a job was woken for (never re-arm <= this)


@dataclass
class CatchUpItem:
    playbook: str
    scheduled_for: dt.datetime
    action: str  # "missed", "running now", "interrupted"
    detail: str

    def line(self, tz: str | None = None) -> str:
        when = self.scheduled_for.astimezone(ZoneInfo(tz)) if tz else self.scheduled_for
        return f"  {self.playbook:<24} {when:%Y-%m-%d %H:%M:%S %Z}  {self.action:<12} {self.detail}"


@dataclass
class _FileState:
    stamp: tuple[int, int]  # (mtime_ns, size)
    version: str
    name: str | None  # playbook name when valid
    errors: tuple[str, ...] = ()


@dataclass
class Running:
    fire: Fire
    started_at: dt.datetime
    task: asyncio.Task[Any] | None = None


@dataclass
class DaemonOptions:
    # Seconds: APScheduler wakes the job this early; claims, checks and the executor's preparation happen
    # then, and a shared precise sleep_until finishes the wait. Half a second off the whole second, so
    # preparing never competes with fires due on the whole second (schedules name whole seconds).
    lead: float = 1.5
    # Seconds more per other fire due at the same instant (claiming and preparing cost ~1 ms each), so
    # 1,000 fires due at once are prepared before their instant.
    lead_per_fire: float = 0.002
    reload_interval: float = 1.0
    control_interval: float = 0.25
    heartbeat_interval: float = 1.0
    shutdown_grace: float = 10.0  # seconds in-flight fires get after SIGTERM before being cancelled
    catch_up_window: dt.timedelta = CATCH_UP_WINDOW


class Daemon:
    def __init__(
        self,
        playbook_dir: str | os.PathLike[str],
        *,
        fires: FireStore,
        control: ControlStore,
        executor: Executor,
        clock: Clock | None = None,
        calendars: CalendarLoader | None = None,
        brokers: Mapping[str, Any] | None = None,
        relogin: Mapping[str, tuple[str, str]] | None = None,
        options: DaemonOptions | None = None,
        account_names: Any = None,
    ) -> None:
        self.dir = Path(playbook_dir).resolve()
        self.store = fires
        self.owner = fires.owner
        self.executor = executor
        self.clock = clock or SystemClock()
        self.calendars = calendars or default_calendar_loader()
        self.brokers = (
            brokers if brokers is not None else {}
        )  # account -> (guarded) broker, for halt cancels and re-login
        self.relogin = dict(relogin or {})  # account -> (HH:MM, IANA zone)
        self.opts = options or DaemonOptions()
        self.account_names = account_names  # runner.validate.AccountNames; None skips the check
        self.watcher = ControlWatcher(control, self.opts.control_interval, on_change=self._control_changed)
        self.batcher = ClaimBatcher(fires)
        self.entries: dict[str, Entry] = {}
        self.files: dict[Path, _FileState] = {}
        self.running: dict[str, Running] = {}  # fire_id -> running fire
        self.pending: dict[str, asyncio.Task[Any]] = {}  # fire_id -> woken, not started yet
        self.catch_up_report: list[CatchUpItem] = []
        self.reload_errors: dict[str, tuple[str, ...]] = {}
        self._calendar_cache: dict[str, Calendar | Exception] = {}
        self._scheduler: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._stopping = False
        self._dirty = True
        self._fire_tasks: set[asyncio.Task[Any]] = set()
        self._gates: dict[dt.datetime, asyncio.Future[None]] = {}
        self._due: dict[dt.datetime, int] = {}  # next fire instant -> entries due then (sizes the lead)

    # --- playbook directory --------------------------------------------------------------------

    def _scan_files(self) -> dict[Path, tuple[tuple[int, int], Loaded | None]]:
        """Runs in a thread: stat every file, load only those whose (mtime, size) moved."""
        seen: dict[Path, tuple[tuple[int, int], Loaded | None]] = {}
        for path in sorted(self.dir.iterdir()):
            if path.suffix not in PLAYBOOK_SUFFIXES or not path.is_file():
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            known = self.files.get(path)
            if known is not None and known.stamp == stamp:
                seen[path] = (stamp, None)
                continue
            seen[path] = (stamp, load_playbook_file(path, self.account_names))
        return seen

    async def reload(self) -> list[str]:
        """Apply the directory's current contents; returns human-readable change lines."""
        scanned = await asyncio.to_thread(self._scan_files)
        return self._apply_scan(scanned)

    def _apply_scan(self, scanned: dict[Path, tuple[tuple[int, int], Loaded | None]]) -> list[str]:
        changes: list[str] = []
        for path in list(self.files):
            if path not in scanned:
                state = self.files.pop(path)
                self.reload_errors.pop(str(path), None)
                if state.name and (e := self.entries.get(state.name)) and e.path == path:
                    self._unschedule(state.name)
                    changes.append(f"{path.name}: deleted, {state.name} unscheduled")
                    log.warning("playbook %s deleted: unscheduled", state.name)
        for path, (stamp, loaded) in scanned.items():
            if loaded is None:
                continue
            known = self.files.get(path)
            if known is not None and known.version == loaded.version:
                known.stamp = stamp  # touched, same content
                continue
            current = known.name if known else None
            if loaded.playbook is None:
                self.files[path] = _FileState(stamp, loaded.version, current, loaded.errors)
                self.reload_errors[str(path)] = loaded.errors
                kept = f"; keeping the previous version of {current}" if current in self.entries else ""
                changes.append(f"{path.name}: invalid{kept}: " + "; ".join(loaded.errors))
                log.error("playbook %s invalid%s: %s", path, kept, "; ".join(loaded.errors))
                continue
            pb = loaded.playbook
            owner = self.entries.get(pb.name)
            if owner is not None and owner.path != path:
                msg = f"{path.name}: playbook name {pb.name!r} already used by {owner.path.name}"
                self.files[path] = _FileState(stamp, loaded.version, None, (msg,))
                self.reload_errors[str(path)] = (msg,)
                changes.append(msg)
                log.error("%s", msg)
                continue
            if current and current != pb.name and current in self.entries:
                self._unschedule(current)  # renamed inside the file
            self.files[path] = _FileState(stamp, loaded.version, pb.name)
            self.reload_errors.pop(str(path), None)
            if pb.schedule is None:
                changes.append(f"{path.name}: {pb.name} has no schedule; not scheduled")
                log.info("playbook %s has no schedule: not scheduled", pb.name)
                self._unschedule(pb.name)
                continue
            entry = Entry(
                pb.name,
                path,
                loaded.version,
                pb,
                build_rule(pb.schedule, pb.timezone),
                late_window(pb.schedule),
            )
            if owner is not None:
                entry.armed_for = owner.armed_for
                self._count_due(owner.next_fire, -1)
            self.entries[pb.name] = entry  # atomic swap: a job looks its entry up when it wakes
            self._arm(entry)
            verb = "reloaded" if owner is not None else "scheduled"
            changes.append(
                f"{path.name}: {pb.name} {verb} (version {loaded.version}), next "
                f"{_fmt(entry.next_fire, pb.timezone)}"
            )
            log.info("playbook %s %s version %s next %s", pb.name, verb, loaded.version, entry.next_fire)
        self._dirty = True
        return changes

    def _unschedule(self, name: str) -> None:
        gone = self.entries.pop(name, None)
        if gone is not None:
            self._count_due(gone.next_fire, -1)
        if self._scheduler is not None and self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)
        self._dirty = True

    # --- arming jobs ---------------------------------------------------------------------------

    def _count_due(self, when: dt.datetime | None, delta: int) -> int:
        if when is None:
            return 0
        n = self._due.get(when, 0) + delta
        if n > 0:
            self._due[when] = n
        else:
            self._due.pop(when, None)
        return n

    def _arm(self, entry: Entry, after: dt.datetime | None = None) -> None:
        now = self.clock.now()
        base = max(x for x in (now, after, entry.armed_for) if x is not None)
        self._count_due(entry.next_fire, -1)
        entry.next_fire = entry.rule.next_after(base)
        due_together = self._count_due(entry.next_fire, +1)
        self._dirty = True
        if self._scheduler is None:
            return
        if entry.next_fire is None:
            if self._scheduler.get_job(entry.name) is not None:
                self._scheduler.remove_job(entry.name)
            return
        from apscheduler.triggers.date import DateTrigger

        # Rounded up to a power of two, so the fires of one instant wake in a few groups (each claims in
        # one transaction) rather than one by one.
        others = 0 if due_together <= 1 else 1 << (due_together - 1).bit_length()
        lead = min(30.0, self.opts.lead + self.opts.lead_per_fire * others)
        wake = entry.next_fire - dt.timedelta(seconds=lead)
        self._scheduler.add_job(
            self._wake,
            DateTrigger(wake),
            args=(entry.name, entry.next_fire),
            id=entry.name,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1000,
        )

    async def _wake(self, name: str, instant: dt.datetime) -> None:
        """APScheduler job, ``lead`` seconds before ``instant``: re-arm, then hand the fire to a task of
        our own (APScheduler cancels its running jobs on shutdown; a fire must get its grace period)."""
        entry = self.entries.get(name)
        if entry is None or self._stopping:
            return
        entry.armed_for = instant
        self._arm(entry, after=instant)
        self._fire_tasks.add(asyncio.ensure_future(self.fire(entry, instant)))

    # --- one fire ------------------------------------------------------------------------------

    def _calendar(self, exchange: str) -> Calendar | Exception:
        cached = self._calendar_cache.get(exchange)
        if cached is None:
            try:
                cached = self.calendars(exchange)
            except Exception as exc:  # missing/broken calendar data: fail closed on every fire
                cached = exc
            self._calendar_cache[exchange] = cached
        return cached

    def closed_reason(self, entry: Entry, instant: dt.datetime) -> str | None:
        """Why the playbook's calendar forbids trading at ``instant`` (None: open, or no calendar).
        Fails closed: a day the calendar does not cover, or a calendar that cannot load, is closed."""
        pb = entry.playbook
        if pb.calendar is None:
            return None
        day = instant.astimezone(ZoneInfo(pb.timezone)).date()
        cal = self._calendar(pb.calendar)
        if isinstance(cal, Exception):
            return f"calendar {pb.calendar} unavailable ({cal}): not trading (fail closed)"
        try:
            covered = cal.covers(day)
            trading = covered and cal.is_trading_day(day)
        except Exception as exc:
            return f"calendar {pb.calendar} failed for {day} ({exc}): not trading (fail closed)"
        if not covered:
            return (
                f"calendar {pb.calendar} does not cover {day}: not trading (fail closed); "
                f"add the year's calendar or an override file"
            )
        if not trading:
            return f"{pb.calendar} closed on {day}"
        return _outside_sessions(cal, pb.calendar, instant, day, ZoneInfo(pb.timezone))

    def precheck(self, entry: Entry, instant: dt.datetime, now: dt.datetime) -> tuple[FireState, str | None]:
        """Whether this fire may run: CLAIMED (yes) or SKIPPED / MISSED with the reason."""
        if (closed := self.closed_reason(entry, instant)) is not None:
            return FireState.SKIPPED, closed
        lateness = now - instant
        if lateness > ON_TIME and (entry.late is None or lateness > entry.late):
            return FireState.MISSED, f"{_secs(lateness)} late (late: {self._policy(entry)})"
        state = self.watcher.state
        if state.mode is Mode.HALT:
            return FireState.SKIPPED, f"halted ({state.reason or 'no reason given'})"
        return FireState.CLAIMED, None

    @staticmethod
    def _policy(entry: Entry) -> str:
        return entry.playbook.schedule.late if entry.playbook.schedule else "skip"

    async def fire(self, entry: Entry, instant: dt.datetime) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._fire_tasks.add(task)
        try:
            await self._fire(entry, instant)
        finally:
            if task is not None:
                self._fire_tasks.discard(task)

    async def _fire(self, entry: Entry, instant: dt.datetime) -> None:
        pb = entry.playbook
        now = self.clock.now()
        state, reason = self.precheck(entry, instant, now)
        run_id = make_run_id(pb.name, instant)
        claim = Claim(pb.name, entry.version, instant, run_id, state, reason)
        try:
            won = await self.batcher.claim(claim, now)
        except Exception:
            log.exception("fire %s %s: claim failed; not running", pb.name, instant)
            return
        if not won:
            log.info("fire %s at %s already claimed by another daemon", pb.name, instant)
            return
        local = _fmt(instant, pb.timezone)
        if state is not FireState.CLAIMED:
            is_loud = reason is not None and ("fail closed" in reason or "not trading" in reason)
            log.log(
                logging.ERROR if is_loud else logging.WARNING,
                "fire %s at %s %s: %s",
                pb.name,
                local,
                state.value,
                reason,
            )
            return
        fire = Fire(pb, entry.path, entry.version, instant, run_id, claim.fire_id)
        task = asyncio.current_task()
        if task is not None:
            self.pending[fire.fire_id] = task
        prepared: PreparedFire | None = None
        try:
            prepared = await self._prepare(fire)
            await self._gate(instant)
        except asyncio.CancelledError:  # shutdown before the instant: it never ran, give the slot back
            self.pending.pop(fire.fire_id, None)
            if prepared is not None:
                await prepared.abandon("shutting down before the scheduled instant", halted=False)
            await asyncio.to_thread(self.store.release, fire.fire_id)
            raise
        except Exception as exc:  # preparing failed (e.g. the broker refused to connect): a failed fire
            self.pending.pop(fire.fire_id, None)
            log.exception("fire %s (%s): preparing failed", pb.name, run_id)
            outcome = f"preparing failed: {type(exc).__name__}: {exc}"
            await self.batcher.set_state(fire.fire_id, FireState.FAILED, outcome, self.clock.now())
            return
        self.pending.pop(fire.fire_id, None)
        if self._stopping or self.watcher.state.mode is Mode.HALT:
            why = "shutting down" if self._stopping else "halted"
            if prepared is not None:
                await prepared.abandon(f"{why} before the scheduled instant", halted=not self._stopping)
            await self.batcher.set_state(fire.fire_id, FireState.SKIPPED, why, self.clock.now())
            return
        await self._execute(fire, prepared)

    async def _prepare(self, fire: Fire) -> PreparedFire | None:
        """Let an executor that can (``prepare(fire)``) do its set-up work before the instant."""
        prepare = getattr(self.executor, "prepare", None)
        if prepare is None:
            return None
        prepared: PreparedFire = await prepare(fire)
        return prepared

    async def _gate(self, instant: dt.datetime) -> None:
        """Wait for ``instant``. Fires due at the same instant share one precise ``sleep_until`` and are
        released together, instead of 1,000 tasks each spinning through the last milliseconds."""
        gate = self._gates.get(instant)
        if gate is None:
            gate = self._gates[instant] = asyncio.ensure_future(self.clock.sleep_until(instant))
            gate.add_done_callback(lambda _: self._gates.pop(instant, None))
        await asyncio.shield(gate)

    async def _execute(self, fire: Fire, prepared: PreparedFire | None = None) -> None:
        running = Running(fire, self.clock.now(), asyncio.current_task())
        self.running[fire.fire_id] = running
        self._dirty = True
        # Mark RUNNING off the critical path: the executor's first broker call must not wait for it.
        marked = self.batcher.set_state_soon(fire.fire_id, FireState.RUNNING, None, running.started_at)
        result: FireResult
        try:
            result = await (prepared.run() if prepared is not None else self.executor(fire))
        except asyncio.CancelledError:
            result = FireResult(FireState.UNKNOWN, "interrupted by shutdown; resolve via the run journal")
            await self._finish(fire, result, marked)
            raise
        except Exception as exc:
            log.exception("fire %s (%s) raised", fire.playbook.name, fire.run_id)
            result = FireResult(FireState.FAILED, f"{type(exc).__name__}: {exc}")
        await self._finish(fire, result, marked)

    async def _finish(self, fire: Fire, result: FireResult, marked: asyncio.Future[bool]) -> None:
        try:
            await asyncio.shield(marked)
        except Exception:
            log.exception("marking fire %s running failed", fire.fire_id)
        self.running.pop(fire.fire_id, None)
        self._dirty = True
        done = self.batcher.set_state(fire.fire_id, result.state, result.outcome, self.clock.now())
        await asyncio.shield(done)
        lvl = logging.INFO if result.state is FireState.SUCCEEDED else logging.ERROR
        log.log(
            lvl,
            "fire %s run %s: %s %s",
            fire.playbook.name,
            fire.run_id,
            result.state.value,
            result.outcome or "",
        )

    # --- catch-up ------------------------------------------------------------------------------

    async def catch_up(self) -> list[CatchUpItem]:
        """Fires due while no daemon ran: per playbook since its last journaled fire (or the last
        heartbeat), at most ``catch_up_window`` back. Applies ``late`` and returns the report."""
        now = self.clock.now()
        last = await asyncio.to_thread(self.store.last_fire_times)
        beat = await asyncio.to_thread(self.store.last_heartbeat, str(self.dir))
        report: list[CatchUpItem] = []
        for row in await asyncio.to_thread(self._interrupted):
            report.append(
                CatchUpItem(
                    row.playbook,
                    row.scheduled_for,
                    "interrupted",
                    f"was {row.state.value} when daemon {row.claimed_by} stopped; "
                    f"run {row.run_id} marked unknown (check `runner show {row.run_id}`)",
                )
            )
        floor = now - self.opts.catch_up_window
        for entry in list(self.entries.values()):
            since = last.get(entry.name) or beat
            if since is None:
                continue
            slots = entry.rule.between(max(since, floor), now)
            if not slots:
                continue
            taken = {
                r.scheduled_for for r in await asyncio.to_thread(self.store.history, entry.name, len(slots))
            }
            slots = [t for t in slots if t not in taken]
            if not slots:
                continue
            latest = slots[-1]
            runnable = entry.late is not None and now - latest <= entry.late
            missed = slots[:-1] if runnable else slots
            policy = self._policy(entry)
            claims = []
            for t in missed:
                closed = self.closed_reason(entry, t)
                state = FireState.MISSED if closed is None else FireState.SKIPPED
                why = closed or f"due while the daemon was down (late: {policy})"
                claims.append(Claim(entry.name, entry.version, t, make_run_id(entry.name, t), state, why))
            won = await asyncio.to_thread(self.store.claim_many, claims, now)
            for c in claims:
                if c.fire_id in won:
                    detail = f"{_secs(now - c.scheduled_for)} late, late: {policy}"
                    action = "missed" if c.state is FireState.MISSED else "skipped"
                    report.append(
                        CatchUpItem(
                            entry.name,
                            c.scheduled_for,
                            action,
                            detail if c.state is FireState.MISSED else c.outcome or "",
                        )
                    )
            if runnable:
                report.append(
                    CatchUpItem(
                        entry.name,
                        latest,
                        "running now",
                        f"{_secs(now - latest)} late, within late: {policy}",
                    )
                )
                entry.armed_for = max(latest, entry.armed_for or latest)
                self._spawn(self.fire(entry, latest))
        report.sort(key=lambda i: (i.scheduled_for, i.playbook))
        self.catch_up_report = report
        if report:
            log.warning("catch-up report (%d):\n%s", len(report), "\n".join(i.line() for i in report))
        return report

    def _interrupted(self) -> list[FireRow]:
        """Claimed/running fires of daemons that are gone: marked UNKNOWN, never re-run here."""
        from runner.fires import read_daemons

        alive = {
            d["daemon_id"]
            for d in read_daemons(self.store.engine)
            if d["stopped_at"] is None and self.clock.now() - d["heartbeat_at"] < dt.timedelta(seconds=5)
        }
        alive.add(self.owner)
        rows = [r for r in self.store.unfinished() if r.claimed_by not in alive]
        for r in rows:
            self.store.set_state(
                r.fire_id,
                FireState.UNKNOWN,
                f"daemon {r.claimed_by} stopped while {r.state}",
                self.clock.now(),
            )
        return rows

    # --- kill switch, re-login, status ------------------------------------------------------------

    async def _control_changed(self, old: ControlState, new: ControlState) -> None:
        self._dirty = True
        if new.mode is Mode.HALT:
            for account, broker in self.brokers.items():
                try:
                    cancelled = await cancel_open_orders(broker)
                    log.warning("halt: %d open orders cancelled on %s", len(cancelled), account)
                except Exception:
                    log.exception("halt: cancelling open orders on %s failed", account)

    def _arm_relogin(self, account: str, after: dt.datetime | None = None) -> None:
        at, zone = self.relogin[account]
        rule = DailyRule(ZoneInfo(zone), parse_time(at), None)
        when = rule.next_after(after or self.clock.now())
        if when is None or self._scheduler is None:
            return
        from apscheduler.triggers.date import DateTrigger

        self._scheduler.add_job(
            self._relogin,
            DateTrigger(when),
            args=(account, when),
            id=f"relogin:{account}",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _relogin(self, account: str, when: dt.datetime) -> None:
        self._arm_relogin(account, after=when)
        broker = self.brokers.get(account)
        if broker is None:
            return
        try:
            await broker.connect()
            log.info("daily re-login of %s done", account)
        except Exception:
            log.exception("daily re-login of %s failed", account)

    def status(self) -> dict[str, Any]:
        return {
            "daemon_id": self.owner,
            "pid": os.getpid(),
            "playbook_dir": str(self.dir),
            "control": self.watcher.state.as_dict(),
            "playbooks": {
                e.name: {
                    "file": e.path.name,
                    "version": e.version,
                    "timezone": e.playbook.timezone,
                    "calendar": e.playbook.calendar,
                    "next_fire": e.next_fire.isoformat() if e.next_fire else None,
                }
                for e in self.entries.values()
            },
            "running": [
                {
                    "playbook": r.fire.playbook.name,
                    "run_id": r.fire.run_id,
                    "fire_id": r.fire.fire_id,
                    "scheduled_for": r.fire.scheduled_for.isoformat(),
                    "started_at": r.started_at.isoformat(),
                }
                for r in self.running.values()
            ],
            "invalid": {path: list(errors) for path, errors in self.reload_errors.items()},
        }

    async def _off_instants(self) -> None:
        """Wait until no fire is due or executing within ``QUIET`` of now: background work (the reload
        scan, the heartbeat's status) would otherwise take the GIL and the loop from the instant."""
        while True:
            now = self.clock.now()
            busy = any(abs((t - now).total_seconds()) < QUIET for t in self._due) or any(
                (now - r.started_at).total_seconds() < QUIET for r in self.running.values()
            )
            if not busy:
                return
            await asyncio.sleep(QUIET / 2)

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._off_instants()
            status = None
            if self._dirty:
                self._dirty = False
                status = self.status()
            try:
                await asyncio.to_thread(self.store.heartbeat, self.clock.now(), status)
            except Exception:
                log.exception("heartbeat write failed")
                self._dirty = True
            await asyncio.sleep(self.opts.heartbeat_interval)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.reload_interval)
            await self._off_instants()
            try:
                for line in await self.reload():
                    log.warning("reload: %s", line)
            except Exception:
                log.exception("reload scan failed; keeping the current schedule")

    # --- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.append(task)

    async def prepare(self) -> list[str]:
        """Load the directory, read the kill switch, catch up, register this daemon. No timers yet."""
        lines = await self.reload()
        await self.watcher.poll_once()
        await self.catch_up()
        await asyncio.to_thread(
            self.store.register_daemon, socket.gethostname(), os.getpid(), str(self.dir), self.clock.now()
        )
        return lines

    async def start(self) -> list[str]:
        """:meth:`prepare`, then start APScheduler and the pollers (control, reload, heartbeat)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        lines = await self.prepare()
        self._scheduler = AsyncIOScheduler(timezone=dt.UTC, event_loop=asyncio.get_running_loop())
        for entry in self.entries.values():
            self._arm(entry)
        for account in self.relogin:
            self._arm_relogin(account)
        self._scheduler.start()
        self.watcher.start()
        self._tasks += [
            asyncio.ensure_future(self._heartbeat_loop()),
            asyncio.ensure_future(self._reload_loop()),
        ]
        return lines

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        await self.start()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        """Block until :meth:`request_stop` (SIGTERM), then shut down gracefully."""
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """No new fires; woken-but-not-started fires give their slot back; running fires get
        ``shutdown_grace`` seconds, then are cancelled and journaled UNKNOWN."""
        self._stopping = True
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in list(self.pending.values()):
            task.cancel()
        running = [r.task for r in self.running.values() if r.task is not None]
        if running:
            log.warning(
                "shutdown: waiting up to %.1fs for %d running fires", self.opts.shutdown_grace, len(running)
            )
            _, late = await asyncio.wait(running, timeout=self.opts.shutdown_grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._fire_tasks, return_exceptions=True)
        await self.batcher.drain()
        await self.watcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.heartbeat, self.clock.now(), self.status(), True)
        log.info("daemon %s stopped", self.owner)


def _outside_sessions(
    cal: Calendar, name: str, instant: dt.datetime, day: dt.date, tz: ZoneInfo
) -> str | None:
    """Why ``instant`` lies outside the day's session (pre-open included), or None. Calendars without
    session data (only trading days) allow the whole day."""
    info = getattr(cal, "session_info", None)
    session = info(day) if info is not None else None
    if session is None:
        return None
    zone = getattr(cal, "tz", None) or tz
    local = instant.astimezone(zone)
    start = session.pre_open[0] if session.pre_open else session.open
    if start <= local.time().replace(tzinfo=None) <= session.close:
        return None
    label = f" ({session.name})" if session.name else ""
    return (
        f"{name} session on {day}{label} is {start:%H:%M}-{session.close:%H:%M} {zone}: "
        f"{local:%H:%M} is outside it"
    )


def new_daemon_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fmt(when: dt.datetime | None, tz: str) -> str:
    return "none" if when is None else f"{when.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M:%S %Z}"


def _secs(delta: dt.timedelta) -> str:
    s = delta.total_seconds()
    return f"{s:.3f}s" if s < 60 else f"{s / 60:.1f}m" if s < 7200 else f"{s / 3600:.1f}h"


__all__ = [
    "CatchUpItem",
    "Daemon",
    "DaemonOptions",
    "Fire",
    "FireResult",
    "build_rule",
    "localize",
    "make_fire_id",
]


# --- the real executor: the engine, through the kill-switch guard ---------------------------------


class BrokerPool(dict[str, Any]):
    """account name -> GuardedBroker, created on first use and shared by every playbook of the account."""

    def __init__(self, accounts: Mapping[str, Any], view: Any, **context: Any) -> None:
        super().__init__()
        self.accounts = accounts
        self.view = view
        self.context = context

    def get_broker(self, account: str) -> Any:
        broker = self.get(account)
        if broker is None:
            from runner.brokers import create_broker
            from runner.control import GuardedBroker

            try:
                acct = self.accounts[account]
            except KeyError:
                raise LookupError(f"unknown account {account!r}") from None
            broker = self[account] = GuardedBroker(create_broker(acct, **self.context), self.view)
        return broker


class EngineExecutor:
    """Runs a fire with the engine (mode ``scheduled``) on the account's guarded broker.

    The daemon calls :meth:`prepare` when it wakes, ``lead`` seconds early: the run is opened, the broker
    connected, unsettled intents reconciled and the first order built and risk-checked then, so at the
    instant only one group commit (shared by every fire released at that instant) stands between the
    clock and the request. Fires of one account due at the same instant share one connect and one
    reconcile."""

    def __init__(self, pool: BrokerPool, journal: Any, clock: Clock) -> None:
        from runner.groupcommit import group_commit_for

        self.pool = pool
        self.journal = journal
        self.clock = clock
        self.commit = group_commit_for(journal.engine)
        self._setups: dict[tuple[str, dt.datetime], asyncio.Future[bool]] = {}
        self._in_flight: dict[str, int] = {}  # account -> runs of it executing now

    async def __call__(self, fire: Fire) -> FireResult:
        return await (await self.prepare(fire)).run()

    async def prepare(self, fire: Fire) -> _PreparedRun:
        from runner.engine import Engine, RunOptions

        pb = fire.playbook
        broker = self.pool.get_broker(pb.account)
        now = self.clock.now()
        for key in [k for k in self._setups if k[1] < now - ON_TIME]:
            del self._setups[key]
        key = (pb.account, fire.scheduled_for)
        shared = self._setups.get(key)
        lead = shared is None
        if lead:
            shared = self._setups[key] = asyncio.get_running_loop().create_future()
            # Another run of this account still executing owns its in-flight intents: reconciling now
            # could take one of its requests for "never arrived". Its own gateway resolves them.
            connect, reconcile = True, not self._in_flight.get(pb.account)
        else:
            assert shared is not None
            done = await asyncio.shield(shared)
            connect = reconcile = not done
        engine = Engine(
            pb,
            broker,
            self.journal,
            self.clock,
            account=pb.account,
            options=RunOptions(
                scheduled_for=fire.scheduled_for, mode="scheduled", connect=connect, reconcile=reconcile
            ),
        )
        try:
            await engine.prepare(self.commit)
        except BaseException:
            if lead and shared is not None and not shared.done():
                shared.set_result(False)  # the others connect / reconcile on their own
            raise
        if lead and shared is not None and not shared.done():
            shared.set_result(True)
        return _PreparedRun(self, engine, pb.account)


class _PreparedRun:
    def __init__(self, owner: EngineExecutor, engine: Any, account: str) -> None:
        self.owner = owner
        self.engine = engine
        self.account = account

    async def run(self) -> FireResult:
        counts = self.owner._in_flight
        counts[self.account] = counts.get(self.account, 0) + 1
        try:
            report = await self.engine.execute()
        finally:
            counts[self.account] -= 1
        steps = ", ".join(f"{s.step_id}={s.outcome.value}" for s in report.steps)
        state = FireState.SUCCEEDED if report.ok else FireState.FAILED
        return FireResult(state, f"run {report.run_id} {report.status.value}: {steps}")

    async def abandon(self, reason: str, halted: bool) -> None:
        from runner.journal import RunStatus

        await self.engine.abandon(reason, RunStatus.REFUSED if halted else RunStatus.STOPPED)
