"""The scheduling daemon behind ``runner serve``: wires the pieces below together.

* :mod:`runner.daemon.rules`          when a schedule fires (IANA zones, DST), pure
* :mod:`runner.daemon.calendar_gate`  closed days and sessions (fail closed)
* :mod:`runner.daemon.policy`         whether a fire runs, is missed or skipped; catch-up decisions, pure
* :mod:`runner.daemon.loader`         the playbook directory: validate, swap atomically, keep old on invalid
* :mod:`runner.daemon.arming`         one APScheduler date job per playbook, ``lead`` seconds early
* :mod:`runner.daemon.release`        prepare (arm), wait for the instant (shared), execute, journal
* :mod:`runner.daemon.catchup`        fires due while no daemon ran
* :mod:`runner.daemon.relogin`        daily broker re-login
* :mod:`runner.daemon.halt_pass`      on halt: every open order of every account cancelled, verified
* :mod:`runner.daemon.status`         heartbeat and ``runner status`` payload
* :mod:`runner.daemon.executor`       the engine as executor

A woken job claims the fire in the journal (:mod:`runner.journal.fires`, exactly once across daemons) with the
policy's verdict (calendar, lateness, kill switch), re-arms the next fire and hands a claimed fire to the
release. The daemon's own database work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from runner.alerts import hooks as alerts
from runner.clock import Clock, SystemClock
from runner.daemon import heap
from runner.daemon.account_use import AccountUse
from runner.daemon.arming import Arming, Timers, wake_lead
from runner.daemon.calendar_gate import Calendar, CalendarGate, CalendarLoader, default_calendar_loader
from runner.daemon.catchup import catch_up, mark_interrupted
from runner.daemon.dirwatch import DirectoryWatch
from runner.daemon.executor import BrokerPool, EngineExecutor, close_opened
from runner.daemon.leasing import LeaseBook
from runner.daemon.loader import (
    PLAYBOOK_SUFFIXES,
    Entry,
    FileState,
    Loaded,
    PlaybookDirectory,
    load_playbook_file,
)
from runner.daemon.membership import Membership
from runner.daemon.owned_arming import OwnedArming
from runner.daemon.policy import (
    ALIVE_WITHIN,
    CATCH_UP_WINDOW,
    ON_TIME,
    CatchUpAction,
    CatchUpItem,
    PeerWatch,
    Verdict,
    fire_verdict,
)
from runner.daemon.preload import preload
from runner.daemon.release import Executor, Fire, FireResult, Hold, PreparedFire, Release, Running
from runner.daemon.relogin import Relogin
from runner.daemon.rules import Rule, build_rule, format_local, late_window, localize
from runner.daemon.scaleout import ScaleOut, clear_unsent_run
from runner.daemon.standby import StandbyBrokers
from runner.daemon.status import QUIET, Heartbeat, Quiet, status_payload
from runner.daemon.upcoming import Upcoming, upcoming
from runner.engine.killswitch import ControlState, ControlStore, ControlWatcher, HaltPass, Mode
from runner.ids import fire_id as make_fire_id
from runner.ids import run_id_in
from runner.journal.claim_leases import clear_unsent_runs
from runner.journal.fires import Claim, ClaimBatcher, FireRow, FireState, FireStore

log = logging.getLogger("runner.scheduler")


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
    # Partitioned ownership and claim leases (runner/daemon/scaleout.py). None: on PostgreSQL only.
    scale_out: bool | None = None
    # Scale-out: brokers of the accounts this daemon would inherit if one peer left, opened (logged in, no
    # orders) ahead (runner/daemon/standby.py). Off where the broker's static IP rule leaves no room.
    standby_brokers: bool = True


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
        self.opts = options or DaemonOptions()
        self.brokers: Mapping[str, Any] = brokers if brokers is not None else {}  # halt cancels, re-login
        # (a BrokerPool: the halt pass opens brokers for accounts no fire has used yet)
        self.accounts_in_use = AccountUse(self.brokers)  # closes the brokers of accounts lost to a rebalance
        self.gate = CalendarGate(calendars or default_calendar_loader())
        self.watcher = ControlWatcher(
            control,
            self.opts.control_interval,
            on_change=self._control_changed,
            before_poll=lambda: self.quiet.around_instant(),
        )
        self.batcher = ClaimBatcher(fires)
        self.timers = Timers()
        self.release = Release(executor, self.batcher, fires, self.clock, self._hold, self._touch)
        self.arming = Arming(self.timers, self.clock, self._wake, self._lead, self._touch)
        self.membership = Membership(self.owner, False)  # partitioned on PostgreSQL: set below
        self.owned = OwnedArming(self.arming, self.membership)
        self.directory = PlaybookDirectory(self.dir, account_names, self._scheduled, self.owned.forget)
        self.dirwatch = DirectoryWatch(self.dir)  # when the reload loop scans (not every second)
        self.relogins = Relogin(relogin or {}, lambda: self.brokers, self.timers, self.clock)
        self.quiet = Quiet(self.clock, (self.arming.due, self.release.imminent), self.release.running)
        self.heartbeat = Heartbeat(fires, self.clock, self.status, self.quiet, self.opts.heartbeat_interval)
        self.release.health = self.watcher.health = self.heartbeat.health  # one outage, said once
        self.catch_up_report: list[CatchUpItem] = []
        self._tasks: list[asyncio.Task[None]] = []  # pollers, and fires started by catch-up
        self._fire_tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._stopping = False
        self._journal: Any = None  # for halt cancel passes, opened on the first
        self._halt_pass: asyncio.Task[None] | None = None  # the latest halt cancel pass
        self.peers = PeerWatch(self.store.owner)  # which other daemons died, for the periodic sweep
        self._broker_errors: dict[str, str] = {}  # account -> why its broker could not be opened
        self._applying: list[Entry] | None = None  # entries a reload applied, armed after it
        self._brokers_opened = False  # by start: from then on a rebalance opens the accounts gained
        self._upcoming: dict[str, tuple[tuple[str, dt.datetime | None], Upcoming]] = {}
        self._status_parts: dict[str, Any] = {}  # each playbook's part of the status, while unchanged
        scale = self.opts.scale_out
        partitioned = fires.engine.dialect.name == "postgresql" if scale is None else scale
        self.membership.partitioned = partitioned
        self.leases = LeaseBook()
        if partitioned:
            fires.lease_seconds = self.leases.lease
            self.release.leases = self.leases
            self.release.on_busy = self._taken_run_busy
        self._taken: dict[str, FireRow] = {}  # fire id -> the claim as taken over, until released
        self.scale = ScaleOut(
            fires, self.membership, self.leases, self.clock.now, self.take_over, self._members_changed
        )
        self.scale.health = self.heartbeat.health
        self.scale.clear = self._clear_taken
        self.scale.late = self.release.gate.late  # taken fires go before answered ones' follow-ups
        self._cleared: set[str] = set()  # fire ids taken over whose old run the batch cleared
        self.standby: StandbyBrokers | None = None
        if partitioned and self.opts.standby_brokers and hasattr(self.brokers, "get_broker"):
            self.standby = StandbyBrokers(self.brokers, self.membership, self.quiet.wait, self._account_busy)
            self.accounts_in_use.kept = lambda: self.standby.opened if self.standby is not None else set()

    # --- views on the parts (kept for callers of the old single-class daemon) ----------------------

    @property
    def entries(self) -> dict[str, Entry]:
        return self.directory.entries

    @property
    def reload_errors(self) -> dict[str, tuple[str, ...]]:
        return self.directory.errors

    @property
    def running(self) -> dict[str, Running]:
        return self.release.running

    @property
    def pending(self) -> dict[str, asyncio.Task[Any]]:
        return self.release.pending

    @property
    def calendars(self) -> CalendarLoader:
        return self.gate.loader

    @calendars.setter
    def calendars(self, loader: CalendarLoader) -> None:
        self.gate.loader = loader
        self._upcoming.clear()

    # --- wiring ----------------------------------------------------------------------------------

    def _touch(self) -> None:
        self.heartbeat.touch()

    def _lead(self, due_together: int) -> float:
        return wake_lead(self.opts.lead, self.opts.lead_per_fire, due_together)

    def _hold(self) -> Hold | None:
        if self._stopping:
            return Hold.SHUTTING_DOWN
        return Hold.HALTED if self.watcher.state.mode is Mode.HALT else None

    def _scheduled(self, entry: Entry, previous: Entry | None) -> None:
        if previous is not None:
            self.arming.replaced(previous)
        if self._applying is not None and self.membership.partitioned:  # armed once the reload's
            # playbooks set the (account-affine) assignment: not one assignment per playbook applied
            self._applying.append(entry)
            return
        self.owned.arm(entry)

    def _members_changed(self) -> None:
        """Arm the playbooks this daemon gained, disarm those it lost; catch up the gained (an instant
        passed while no member had them armed runs by its ``late:`` policy, claimed as ever)."""
        self._touch()
        gained = self.owned.rebalance(self.entries.values())
        owns = self.membership.owns
        self.accounts_in_use.rebalanced({e.playbook.account for e in self.entries.values() if owns(e.name)})
        if gained and not self._stopping:
            self._spawn(self._catch_up_gained(gained))
        if self._brokers_opened and not self._stopping:  # brokers of accounts gained (start opens its own)
            self._spawn(self._open_gained())
            self._spawn(self._refresh_standby())

    async def _refresh_standby(self) -> None:
        if self.standby is None:
            return
        try:
            await self.standby.refresh()
        except Exception:
            log.exception("opening standby brokers failed")

    def _account_busy(self, account: str) -> bool:
        """A fire of ``account`` runs here, or one taken over is being released (its broker is in use)."""
        running = {r.fire.playbook.account for r in self.running.values()}
        taken = {e.playbook.account for row in self._taken.values() if (e := self.entries.get(row.playbook))}
        return account in running or account in taken

    async def _open_gained(self) -> None:
        await self.preload_masters()
        for line in self.open_brokers():
            log.warning("rebalance: %s", line)

    async def _catch_up_gained(self, gained: list[Entry]) -> None:
        try:
            await self.catch_up(gained)
        except Exception:
            log.exception("catch-up of playbooks gained on rebalance failed")

    async def _control_changed(self, old: ControlState, new: ControlState) -> None:
        """On HALT, a cancel pass in a task of its own: the poller goes on (a resume during a slow pass
        is seen within a poll, not when the pass ends). Passes run one after another."""
        self._touch()
        if new.mode is not old.mode:  # alerted once across processes: the row says who already did
            claim = partial(self.watcher.store.claim_alert, new, self.owner)
            seen = partial(alerts.kill_switch_seen, claim, old.mode.value, new.mode.value, new.reason, new.by)
            await asyncio.to_thread(seen)
        if new.mode is Mode.HALT:
            self._halt_pass = asyncio.create_task(self._halt_pass_after(self._halt_pass))

    async def _halt_pass_after(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self.cancel_open_orders()
        except Exception:
            log.exception("halt cancel pass failed")

    async def halt_passes_done(self) -> None:
        """Until the halt cancel passes started so far have finished."""
        while (task := self._halt_pass) is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)

    async def cancel_open_orders(self) -> list[HaltPass]:
        """The halt cancel pass (:mod:`runner.daemon.halt_pass`) on every account the loaded playbooks name
        and every broker already open, brokers opened through the pool where missing."""
        named: dict[str, list[str]] = {a: [] for a in self.brokers}
        for e in self.entries.values():
            named.setdefault(e.playbook.account, []).append(e.name)
        since = self.watcher.state.since
        if not self.membership.partitioned or since is None:
            return await self._cancel_on(sorted(named), since)
        # members share the accounts out: each cancels on its own, and covers a dead owner's
        from runner.daemon.halt_share import HaltShare

        state = self.watcher.state
        share = HaltShare(
            self.membership,
            self.scale.refresh_members,
            self.watcher.store.passed_for,
            lambda accounts: self._cancel_on(accounts, since),
            lambda: not self._stopping and self.watcher.state == state,
        )
        return await share.run(named, since)

    async def _cancel_on(self, names: list[str], since: dt.datetime | None) -> list[HaltPass]:
        from runner.daemon.halt_pass import cancel_pass

        get = getattr(self.brokers, "get_broker", None)
        brokers: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in sorted(names):
            try:
                brokers[name] = get(name) if get is not None else self.brokers[name]
            except Exception as exc:  # unknown account, credentials missing: reported, others go on
                errors[name] = f"no broker: {type(exc).__name__}: {exc}"
        with self.accounts_in_use.hold(*names):
            return await cancel_pass(
                brokers, self._run_journal(), self.clock, self.watcher.store, by=self.owner, errors=errors,
                since=since,
            )  # fmt: skip

    def status(self) -> dict[str, Any]:
        payload = status_payload(
            self.owner,
            self.dir,
            self.watcher.state,
            self.entries.values(),
            self.running.values(),
            self.reload_errors,
            self.upcoming,
            self._status_parts,
        ) | {"journal": self.heartbeat.health.as_dict()}
        owned = sorted(name for name in self.entries if self.membership.owns(name))
        payload["members"] = list(self.membership.members)
        payload["owns"] = {"count": len(owned), "sample": owned[:5]}
        return payload

    def upcoming(self, entry: Entry) -> Upcoming:
        """The next fire that will run and the closed-day fires before it (cached per armed instant)."""
        key = (entry.version, entry.next_fire)
        cached = self._upcoming.get(entry.name)
        if cached is None or cached[0] != key:
            cached = self._upcoming[entry.name] = (key, upcoming(entry, self.gate))
        return cached[1]

    async def reload(self) -> list[str]:
        """Apply the directory's current contents; returns human-readable change lines. Calendars of new
        playbooks are loaded here, in a worker thread, not by their first fire on the event loop."""
        self._applying = []
        try:
            lines = await self.directory.reload()
        finally:
            applied, self._applying = self._applying, None
        # ownership is account-affine over the loaded playbooks: set them, then arm what was applied
        changed = bool(lines) and self.membership.set_playbooks(
            {n: e.playbook.account for n, e in self.entries.items()}
        )
        for entry in applied:
            self.owned.arm(entry)
        if changed and self.membership.partitioned:
            self._members_changed()  # the assignment may have moved playbooks already armed
        if lines:  # a scan that found nothing new changes neither the calendars nor the status
            wanted = {e.playbook.calendar for e in self.entries.values()}
            if self.gate.missing(wanted):
                await asyncio.to_thread(self.gate.warm, wanted)
            self._touch()
        return lines

    def _unopened(self) -> dict[str, list[str]]:
        """account -> its playbooks this daemon owns, for accounts whose broker is not open yet."""
        named: dict[str, list[str]] = {}
        for entry in self.entries.values():
            if self.membership.owns(entry.name):  # accounts it owns nothing of: no login, no masters
                named.setdefault(entry.playbook.account, []).append(entry.name)
        return {a: names for a, names in named.items() if a not in self.brokers}

    async def preload_masters(self) -> None:
        """The masters :meth:`open_brokers` is about to need, parsed in a worker thread: parsed on the
        loop they stalled it (and the heartbeat it schedules) long enough for peers to drop this daemon."""
        preload = getattr(self.brokers, "preload_masters", None)
        accounts = sorted(self._unopened())
        if preload is not None and accounts:
            await asyncio.to_thread(preload, accounts)

    def open_brokers(self) -> list[str]:
        """Create the broker of every account the loaded playbooks name that has none yet, at start and
        after a reload (on the loop, between instants): not in a fire's lead time, as building one may
        read secret files (and parse an instrument master, unless :meth:`preload_masters` did). Returns
        a line per account that failed."""
        get = getattr(self.brokers, "get_broker", None)
        if get is None:
            return []
        named = self._unopened()
        lines = []
        for account in sorted(named):
            try:
                get(account)
            except Exception as exc:  # unknown account, credentials missing: its fires fail and say so
                line = f"account {account!r} of {', '.join(sorted(named[account]))}: {exc}"
                if self._broker_errors.get(account) != line:  # said once, not on every reload scan
                    lines.append(line)
                self._broker_errors[account] = line
            else:
                self._broker_errors.pop(account, None)
        return lines

    # --- one fire ----------------------------------------------------------------------------------

    async def _wake(self, name: str, instant: dt.datetime) -> None:
        """APScheduler job, ``lead`` seconds before ``instant``: re-arm, then hand the fire to a task of
        our own (APScheduler cancels its running jobs on shutdown; a fire must get its grace period)."""
        entry = self.entries.get(name)
        if entry is None or self._stopping:
            return
        entry.armed_for = instant
        self.owned.arm(entry, after=instant)
        self._fire_tasks.add(asyncio.ensure_future(self.fire(entry, instant)))

    def precheck(self, entry: Entry, instant: dt.datetime, now: dt.datetime) -> Verdict:
        pb = entry.playbook
        closed = self.gate.closed(pb.calendar, pb.timezone, instant)
        return fire_verdict(closed, now - instant, entry.late, entry.late_policy, self.watcher.state)

    async def fire(self, entry: Entry, instant: dt.datetime) -> None:
        """Claim the fire with the policy's verdict; release it if it may run."""
        task = asyncio.current_task()
        if task is not None:
            self._fire_tasks.add(task)
        try:
            with self.accounts_in_use.hold(entry.playbook.account):  # its broker stays open meanwhile
                await self._fire(entry, instant)
        finally:
            if task is not None:
                self._fire_tasks.discard(task)

    def _run_journal(self) -> Any:
        from runner.journal.store import Journal

        if self._journal is None:
            self._journal = Journal(engine=self.store.engine)
        return self._journal

    async def _fire(self, entry: Entry, instant: dt.datetime) -> None:
        pb = entry.playbook
        if not self.membership.owns(pb.name):  # another member prepares and claims it
            return
        if not self.heartbeat.health.reachable:  # no round trip per fire to a dead server: the beat probes
            self.heartbeat.health.when_back(lambda: self._spawn(self.fire(entry, instant)))
            return
        before = self.leases.stamp()  # the lease's local deadline counts from before the claim's write
        now = self.clock.now()
        verdict = self.precheck(entry, instant, now)
        self.leases.claiming += 1  # the renewal thread renews while claims are being written
        try:
            run_id = run_id_in(self._run_journal().has_run, pb.name, instant, ZoneInfo(pb.timezone))
            claim = Claim(pb.name, entry.version, instant, run_id, verdict.state, verdict.reason)
            won = await self.batcher.claim(claim, now)
        except Exception as exc:
            if self.heartbeat.health.trouble(exc, f"claiming fire {pb.name} at {instant.isoformat()}"):
                # claimed once the journal is back, judged then by its late policy: never silently lost
                self.heartbeat.health.when_back(lambda: self._spawn(self.fire(entry, instant)))
                if self.membership.partitioned:  # it may have landed, its reply lost: ours, unsent
                    self.leases.forfeit(make_fire_id(pb.name, entry.version, instant))
                return
            log.exception("fire %s %s: claim failed; not running", pb.name, instant)
            return
        finally:
            self.leases.claiming -= 1
        self.heartbeat.health.ok()  # a claim landed: an outage is over (fresh connections before preparing)
        if not won:
            log.info("fire %s at %s already claimed by another daemon", pb.name, instant)
            return
        if verdict.state is not FireState.CLAIMED:
            lvl = logging.ERROR if verdict.loud else logging.WARNING
            local = format_local(instant, pb.timezone)
            log.log(lvl, "fire %s at %s %s: %s", pb.name, local, verdict.state.value, verdict.reason)
            if verdict.loud:
                alerts.fire_missed(pb, instant, f"{verdict.state.value}: {verdict.reason}")
            return
        if self.membership.partitioned:
            self.leases.granted([claim.fire_id], before)
        await self.release.release(Fire(pb, entry.path, entry.version, instant, run_id, claim.fire_id))

    async def take_over(self, row: FireRow) -> None:
        """A claim taken over from a holder whose lease lapsed unsent (:mod:`runner.daemon.scaleout`): its
        armed run is taken back out of the journal, then it is re-armed and released like our own, by
        the playbook's ``late:`` policy."""
        entry = self.entries.get(row.playbook)
        now = self.clock.now()
        if entry is None:  # not loaded here: give it back to the playbook's next owner's catch-up
            self.leases.done(row.fire_id)
            await asyncio.to_thread(self.store.release, row.fire_id)
            return
        if row.fire_id in self._cleared:  # by the takeover's batch (_clear_taken)
            self._cleared.discard(row.fire_id)
        else:
            await asyncio.to_thread(clear_unsent_run, self._run_journal(), row, now)
        log.info("taken-over fire %s cleared", row.fire_id)  # bench/scaleout.py's timeline
        verdict = self.precheck(entry, row.scheduled_for, now)
        if verdict.state is not FireState.CLAIMED:
            self.leases.done(row.fire_id)
            why = f"{verdict.state.value}: {verdict.reason}"
            log.error("taken-over fire %s at %s %s", row.playbook, row.scheduled_for.isoformat(), why)
            await self.batcher.set_state(row.fire_id, verdict.state, verdict.reason, now)
            return
        fire = Fire(
            entry.playbook, entry.path, row.version, row.scheduled_for, row.run_id, row.fire_id, taken=True
        )
        task = asyncio.current_task()
        if task is not None:  # shutdown waits for it like any fire
            self._fire_tasks.add(task)
        self._taken[row.fire_id] = row
        try:
            with self.accounts_in_use.hold(entry.playbook.account):
                await self.release.release(fire)
        finally:
            self._taken.pop(row.fire_id, None)
            if task is not None:
                self._fire_tasks.discard(task)

    def _clear_taken(self, rows: list[FireRow]) -> None:
        """The old runs of the claims just taken over, cleared in one transaction (see
        :func:`runner.journal.claim_leases.clear_unsent_runs`), on the takeover's thread; those of
        playbooks not loaded here are left to their next owner's catch-up, as :meth:`take_over` leaves
        them. If it raises, each is cleared on its own by :meth:`take_over`."""
        here = [row for row in rows if row.playbook in self.entries]
        if not here:
            return
        kept = clear_unsent_runs(self.store.engine, here, self.clock.now())
        for run_id in sorted(kept):
            log.warning("run %s of a taken-over fire: armed intent kept", run_id)
        self._cleared.update(row.fire_id for row in here)

    async def _taken_run_busy(self, fire: Fire) -> bool:
        """Preparing a taken-over fire found its run open under the old holder: alive but slow, it opened
        the run after :func:`clear_unsent_run`. It lost the claim with its lease and can no longer send,
        so while our lease holds its run is cleared again and preparing retried."""
        row = self._taken.get(fire.fire_id)
        if row is None or not self.leases.sendable(fire.fire_id):
            return False
        log.warning("taken-over fire %s: run %s opened by %s meanwhile; clearing it again", row.playbook,
                    row.run_id, row.claimed_by)
        await asyncio.sleep(0.05)  # let the old holder's prepare finish its writes
        await asyncio.to_thread(clear_unsent_run, self._run_journal(), row, self.clock.now())
        return True

    # --- catch-up ----------------------------------------------------------------------------------

    async def catch_up(self, added: list[Entry] | None = None) -> list[CatchUpItem]:
        """Fires due while no daemon ran (see :func:`runner.daemon.catchup.catch_up`): journaled as
        missed/skipped, the latest started if its ``late`` policy allows. Returns the report. At start
        for every playbook; with ``added``, for the playbooks a reload just added (the same policy)."""
        entries = list(self.entries.values()) if added is None else added
        window = self.opts.catch_up_window
        done = await asyncio.to_thread(
            partial(catch_up, at_start=added is None),
            self.store,
            entries,
            self.gate,
            self.clock.now(),
            window,
            str(self.dir),
        )
        for entry, instant in done.run_now:
            entry.armed_for = max(instant, entry.armed_for or instant)
            self._spawn(self.fire(entry, instant))
        if added is None:
            self.catch_up_report = done.report
        else:
            self.catch_up_report += done.report
        if done.report:
            log.warning(
                "catch-up report (%d):\n%s", len(done.report), "\n".join(i.line() for i in done.report)
            )
            for item in done.report:
                if item.action in (CatchUpAction.MISSED, CatchUpAction.INTERRUPTED):
                    alerts.missed_line(item.playbook, f"while no daemon ran: {item.line()}")
        return done.report

    async def sweep_interrupted(self) -> list[CatchUpItem]:
        """Fires another daemon claimed and left unfinished when it died (a crash followed by a restart
        within ``ALIVE_WITHIN``, or the other half of an HA pair; judged by :class:`PeerWatch`): marked
        UNKNOWN and their runs closed, as the start-up catch-up does. Never re-run."""
        now = self.clock.now()
        if self.heartbeat.obstructed():  # a locked journal stalls every daemon's beats, not just a dead one's
            self.peers.forgive(now)
        items = await asyncio.to_thread(mark_interrupted, self.store, now, lambda d: self._gone(d, now))
        for item in items:
            log.error("fire of a dead daemon: %s", item.line())
            alerts.missed_line(item.playbook, f"fire of a dead daemon: {item.line()}")
        if items:
            self._touch()
        return items

    def _gone(self, daemons: Any, now: dt.datetime) -> set[str]:
        """Judged in the sweep's worker thread, after its read of the daemons: a beat of ours stuck
        behind a lock taken meanwhile still counts (the peers' are stuck behind it too)."""
        if self.heartbeat.obstructed():
            self.peers.forgive(now)
        return self.peers.gone(daemons, now)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_WITHIN.total_seconds())
            await self.quiet.wait()
            try:
                await self.sweep_interrupted()
            except Exception as exc:
                if not self.heartbeat.health.trouble(exc, "sweep for fires of dead daemons"):
                    log.exception("sweep for fires of dead daemons failed")

    # --- lifecycle ---------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _reload_loop(self) -> None:
        """A scan when the directory may have changed (:mod:`runner.daemon.dirwatch`): an edit is seen
        within ``reload_interval`` as before, but an idle daemon no longer stats every file each time."""
        watch = self.dirwatch
        watch.start()
        try:
            while True:
                await asyncio.sleep(self.opts.reload_interval)
                if not watch.due():
                    continue
                await self.quiet.wait()
                watch.scanning()
                try:
                    await self.rescan()
                except Exception:
                    log.exception("reload scan failed; keeping the current schedule")
        finally:
            watch.stop()

    async def rescan(self) -> list[str]:
        """One reload scan while running: apply the directory, open new accounts' brokers, and catch up
        the playbooks it added, as a restart would (a slot still within ``late:`` runs now)."""
        before = set(self.entries)
        changes = await self.reload()  # the loader logs each change (INFO; an invalid file: ERROR)
        await self.preload_masters()
        failed = self.open_brokers()
        for line in failed:
            log.warning("reload: %s", line)
        lines = changes + failed
        if changes:
            heap.freeze()  # the new versions join the long-lived heap full collections skip
        added = [e for name, e in self.entries.items() if name not in before]
        if added:
            await self.catch_up(added)
        return lines

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
        """:meth:`prepare`, then start APScheduler and the pollers (control, reload, heartbeat), and open
        the brokers (:meth:`open_brokers`)."""
        lines = await self.prepare()
        if self.membership.partitioned:  # members first: brokers are opened for owned accounts only
            await self.scale.refresh_members()
        await self.preload_masters()
        lines += self.open_brokers()
        self._brokers_opened = True
        await asyncio.to_thread(preload)  # the fire path's imports, not in the first instant's lead time
        heap.freeze(collect=True)  # before any timer: what is loaded now is kept out of full collections
        if self.membership.partitioned:
            self._spawn(self.scale.run())
            self._spawn(self._refresh_standby())
        self.timers.start(asyncio.get_running_loop())
        for entry in self.entries.values():
            self.owned.arm(entry)
        self.relogins.arm_all()
        self.watcher.start()
        self._spawn(self.heartbeat.run())
        self._spawn(self._reload_loop())
        self._spawn(self._sweep_loop())
        return lines

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Block until :meth:`request_stop` (SIGTERM), then shut down gracefully."""
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """No new fires; woken-but-not-started fires give their slot back; running fires get
        ``shutdown_grace`` seconds, then are cancelled and journaled UNKNOWN."""
        self._stopping = True
        self.timers.shutdown()
        for task in list(self.pending.values()):
            task.cancel()
        running = [r.task for r in self.running.values() if r.task is not None]
        if running:
            log.info(  # routine on SIGTERM; a fire cut off after the grace is journaled unknown
                "shutdown: waiting up to %.1fs for %d running fires", self.opts.shutdown_grace, len(running)
            )
            _, late = await asyncio.wait(running, timeout=self.opts.shutdown_grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._fire_tasks, return_exceptions=True)
        await self.batcher.drain()
        await self.watcher.stop()
        if self._halt_pass is not None and not self._halt_pass.done():  # cancels are worth the wait
            log.warning("shutdown: waiting up to %.1fs for the halt cancel pass", self.opts.shutdown_grace)
            _, unfinished = await asyncio.wait({self._halt_pass}, timeout=self.opts.shutdown_grace)
            if unfinished:  # not cancelled here: the process ends with it, its journal shows how far it got
                log.error("shutdown: halt cancel pass unfinished; `runner halt --cancel-now` finishes it")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.accounts_in_use.drained()
        await close_opened(self.brokers)  # sessions and sockets closed, not left to the GC's "Unclosed"
        await self.heartbeat.stopped()
        log.info("daemon %s stopped", self.owner)


def new_daemon_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


__all__ = [
    "CATCH_UP_WINDOW",
    "ON_TIME",
    "PLAYBOOK_SUFFIXES",
    "QUIET",
    "BrokerPool",
    "Calendar",
    "CalendarLoader",
    "CatchUpAction",
    "CatchUpItem",
    "Daemon",
    "DaemonOptions",
    "EngineExecutor",
    "Entry",
    "Executor",
    "FileState",
    "Fire",
    "FireResult",
    "Loaded",
    "PreparedFire",
    "Rule",
    "build_rule",
    "default_calendar_loader",
    "late_window",
    "load_playbook_file",
    "localize",
    "new_daemon_id",
]
