"""Crash harness shared by tests/crash/test_crash.py and bench/engine.py: run a rehearsal in a forked child,
SIGKILL it at a random instant, restart it, and check the book against the journal.

Two broker modes (:class:`Mode`):

* ``IDEMPOTENT``: paper as shipped, refusing a repeated client id (a re-send cannot duplicate).
* ``PLAIN``: paper with ``idempotent_client_ids: false`` (a repeated client id is a second order, as at the
  real Indian brokers) and ``lookup_lag`` (a lookup by client id misses a new order for a while, as when a
  broker scans its day book). Restarts come after a random gap of virtual time, sometimes short of the
  lag, sometimes past ``Tuning.absent_after``: the gateway's "absent after a while" rule is what keeps
  this mode free of duplicates. A start that finds an order neither present nor provably absent fails
  its step (outcome unknown) rather than guess; a later start, past ``absent_after``, settles the
  journal with the broker. That outcome is accepted, and checked for what it must still guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import io
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from runner.commands.results import exit_code

if TYPE_CHECKING:
    from runner.brokers.base import Broker

# The future expires in March: on DAY (2026-03-02) only the three serial NIFTY futures are listed.
CRASH_PLAYBOOK = """\
version: 1
name: crashy
timezone: Asia/Kolkata
instruments:
  fut: {exchange: NFO, symbol: NIFTY, expiry: 2026-03-30, lot_size: 75, freeze_quantity: 1800}
  ce: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24500, option_type: CE, lot_size: 75}
  pe: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 24000, option_type: PE, lot_size: 75}
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: a, at: "09:20", late: run-within 1h, instrument: fut, side: BUY, lots: 2}
  - {kind: place, id: b, instrument: rel, side: BUY, quantity: 10}
  - kind: spread
    id: s
    legs:
      - {id: hedge, instrument: pe, side: BUY, lots: 1, role: hedge}
      - {id: short, instrument: ce, side: SELL, lots: 1}
  - {kind: place, id: c, instrument: rel, side: BUY, quantity: 5, type: LIMIT, price: 1300}
  - {kind: modify, id: m, order: c, price: 1295}
  - {kind: cancel, id: x, order: c}
  - {kind: square_off, id: sq, at: "15:15"}
"""
# The account's next run after a failed one (an operator's square-off, a later run of the day): it
# reconciles the dead run's intents and closes whatever the failed run left open.
OPERATOR_PLAYBOOK = """\
version: 1
name: operator
timezone: Asia/Kolkata
steps:
  - {kind: square_off, id: osq}
"""
# Concurrent runs on one account (issue 11 §1): a buy, then two square-offs of the account at once.
BUY_PLAYBOOK = """\
version: 1
name: buyer
timezone: Asia/Kolkata
steps:
  - {kind: place, id: buy, instrument: {exchange: NSE, symbol: RELIANCE}, side: BUY, quantity: 10}
"""
CLOSER_PLAYBOOK = """\
version: 1
name: closer{n}
timezone: Asia/Kolkata
steps:
  - {{kind: square_off, id: close}}
"""
OVERLAP_IN_FLIGHT = 0.05  # real seconds each way: two square-offs started together overlap
DAY = dt.date(2026, 3, 2)
# Entry quantities per instrument key: each must reach the book exactly once.
EXPECTED_BUYS = {"NFO NIFTY 2026-03-30": 150, "NSE RELIANCE": 10, "NFO NIFTY 2026-12-29 24000 PE": 75}
EXPECTED_SELLS = {"NFO NIFTY 2026-12-29 24500 CE": 75}
# Orders each step puts at the broker (the paper broker modifies in place): exactly these in a succeeded
# run, never more in any run. The square-off closes the four positions, one order each.
EXPECTED_ORDERS = {"a": 1, "b": 1, "s": 2, "c": 1, "sq": 4}
OPERATOR_ORDERS = {"osq": 4}  # at most: what a failed run left open
# Journaled statuses that differ from the broker's at the end are counted in ``Check.stale`` and are
# problems: every run reads its non-terminal orders back at its end and reconcile revisits open intents
# of finished runs (issue 11 §4). RUNNER_CRASH_STALE_STATUS=note only counts them (to study a regression).
STALE_STATUS_IS_A_PROBLEM = os.environ.get("RUNNER_CRASH_STALE_STATUS") != "note"
IN_FLIGHT = 0.002  # real seconds each way of an order request (InFlight)
LOOKUP_LAG = 20  # seconds (PLAIN mode); below Tuning.absent_after (60 s), as it must be for any broker
ABSENT_AFTER = 60.0  # Tuning's default, restated so the gaps below straddle it
# Gateway's notes: a lookup miss taken as proof of absence (the intent re-sent, or marked ABSENT), and
# one too recent to be (left unknown: the step fails rather than re-send).
RESENT = "is not at the broker: sending it under the same id"
PROVEN_ABSENT = (RESENT, "never reached the broker")
TOO_RECENT = ("left unknown", "not re-sent")


class Mode(enum.StrEnum):
    IDEMPOTENT = "idempotent"
    PLAIN = "plain"


def account_for(mode: Mode) -> Any:
    from runner.plan.rehearse import REHEARSE_ACCOUNT

    if mode is Mode.IDEMPOTENT:
        return REHEARSE_ACCOUNT
    options = {**REHEARSE_ACCOUNT.options, "idempotent_client_ids": False, "lookup_lag": LOOKUP_LAG}
    return REHEARSE_ACCOUNT.model_copy(update={"options": options})


def restart_gap(rng: random.Random, mode: Mode) -> float:
    """Virtual seconds between the last journaled activity and the next start (PLAIN mode only): short of
    the lookup lag, between the lag and absent_after, or past absent_after."""
    if mode is Mode.IDEMPOTENT:
        return 0.0
    pick = rng.random()
    if pick < 0.35:
        return rng.uniform(0.0, LOOKUP_LAG / 2)
    if pick < 0.5:
        return rng.uniform(LOOKUP_LAG + 5, ABSENT_AFTER - 10)
    return rng.uniform(ABSENT_AFTER + 5, 3 * ABSENT_AFTER)


def _playbook(text: str = CRASH_PLAYBOOK) -> Any:
    from runner.playbook.models import Playbook
    from runner.playbook.yamlload import load_yaml

    return Playbook.model_validate(load_yaml(text).value)


def seed_from_env() -> int:
    """A fresh seed per run, or ``RUNNER_CRASH_SEED`` to replay one (kill instants are real time, so a
    replay draws the same gaps and kill offsets, not the same interleavings)."""
    return int(os.environ.get("RUNNER_CRASH_SEED") or random.randrange(1 << 30))


@dataclass(frozen=True)
class Die:
    """A kill at an exact point instead of a random instant: just before the ``request``-th order request
    of a start reaches the broker (``before``), or just after it did, its reply not yet journaled."""

    request: int
    before: bool


class InFlight:
    """The paper broker, with each order request and its reply taking a moment of real time as over a
    network: a kill then often lands with an order in flight (journaled, not yet at the broker; or at the
    broker, its reply not yet journaled), the states a restart must resolve without a duplicate."""

    def __init__(self, inner: Any, seconds: float = IN_FLIGHT, die: Die | None = None) -> None:
        self.inner = inner
        self.seconds = seconds
        self.die = die
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _through(self, call: Any) -> Any:
        self.calls += 1
        time.sleep(self.seconds)  # blocking on purpose: nothing else of this process may run meanwhile
        self._maybe_die(before=True)
        result = await call
        self._maybe_die(before=False)
        time.sleep(self.seconds)
        return result

    def _maybe_die(self, *, before: bool) -> None:
        if self.die is not None and self.die.request == self.calls and self.die.before is before:
            os.kill(os.getpid(), signal.SIGKILL)

    async def place(self, request: Any) -> Any:
        return await self._through(self.inner.place(request))

    async def place_multileg(self, request: Any) -> Any:
        return await self._through(self.inner.place_multileg(request))

    async def modify(self, order: Any, change: Any) -> Any:
        return await self._through(self.inner.modify(order, change))

    async def cancel(self, order: Any) -> Any:
        return await self._through(self.inner.cancel(order))

    async def cancel_multileg(self, legs: Any) -> Any:
        return await self._through(self.inner.cancel_multileg(legs))


class Harness:
    """One SQLite path reused by every iteration, and an Engine whose statement cache is warmed in the
    parent (so each forked child starts fast). The parent holds no connection when it forks."""

    def __init__(self, tmp_dir: str, mode: Mode = Mode.IDEMPOTENT, mutation: str | None = None) -> None:
        from runner import logs
        from runner.journal.db import make_engine

        logs.configure(json=True, stream=io.StringIO(), force=True)
        self.mode = mode
        # A planted defect (tests/helpers/crash_mutations.py), applied in each forked child only: the warm-up
        # and timing runs below, in this process, stay unmutated.
        self.mutation: str | None = None
        self.in_flight = IN_FLIGHT
        self.operator = _playbook(OPERATOR_PLAYBOOK)
        self.account = account_for(mode)
        self.path = f"{tmp_dir}/crash-{mode.value}.db"
        self.url = f"sqlite:///{self.path}"
        self.engine = make_engine(self.url)
        self.pb = _playbook()
        self._rehearse_here()  # warm-up, cold caches
        self.reset()
        t0 = time.perf_counter()
        self._rehearse_here()
        self.full_run = time.perf_counter() - t0  # a warm, uninterrupted run
        problems = check_book(self.url, mode).problems
        assert not problems, problems
        self.reset()
        # Kill instants are drawn over a forked start's own span (fork, imports warm, open the file...),
        # several times the in-process run: drawn over the latter, most kills would land before any work.
        spans = []
        for _ in range(3):
            t0 = time.perf_counter()
            code = self.run_child(None)
            spans.append(time.perf_counter() - t0)
            assert code == 0, f"an uninterrupted forked start exited {code}"
            self.reset()
        self.child_run = sorted(spans)[1]
        self.mutation = mutation if mutation is not None else os.environ.get("RUNNER_CRASH_MUTATION")

    def _rehearse_here(self) -> None:
        report = asyncio.run(self._rehearse(0.0))
        assert report.ok, report

    async def _rehearse(self, gap: float, pb: Any = None, die: Die | None = None) -> Any:
        """What :func:`runner.plan.rehearse.rehearse` does, but the virtual clock resumes ``gap`` seconds
        after the crash run's last journaled activity, and order requests and replies take a moment
        (:class:`InFlight`). ``pb``: another playbook on the same account (default: the crash one)."""
        pb = pb or self.pb
        from runner.brokers.paper.broker import create
        from runner.clock import VirtualClock
        from runner.engine.core import RunOptions, execute
        from runner.journal.store import Journal
        from runner.plan.rehearse import day_start, rehearsal_run_id, run_key, slot_of

        journal = Journal(engine=self.engine)
        begin = day_start(self.pb, DAY)
        last = journal.last_activity(rehearsal_run_id(self.pb, DAY))
        clock = VirtualClock(max(begin, last + dt.timedelta(seconds=gap)) if last else begin)
        broker = InFlight(create(self.account, clock=clock, engine=self.engine), self.in_flight, die)
        options = RunOptions(scheduled_for=slot_of(pb, DAY), mode="rehearse", run_key=run_key(pb))
        try:
            return await execute(
                pb, cast("Broker", broker), journal, clock, account=self.account.name, options=options
            )
        finally:
            await broker.close()

    def reset(self) -> None:
        """Drop every connection of this process to the file, then delete it."""
        release_paper_connections(self.engine)
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)

    def child(self, gap: float, pb: Any = None, die: Die | None = None) -> None:
        code = 1
        try:
            if self.mutation:
                from helpers.crash_mutations import apply

                apply(self.mutation)
            report = asyncio.run(self._rehearse(gap, pb, die))
            code = exit_code(report)  # as `runner run` exits: 0, 3 failed, 4 refused
        finally:
            os._exit(code)

    def run_child(
        self, kill_after: float | None, gap: float = 0.0, pb: Any = None, die: Die | None = None
    ) -> int | None:
        """Fork a rehearsal; SIGKILL it after ``kill_after`` seconds (None: let it finish) or at ``die``.
        Returns its exit code, or None when it was killed."""
        pid = os.fork()
        if pid == 0:
            self.child(gap, pb, die)
        if kill_after is not None:
            deadline = time.monotonic() + kill_after
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return None if code == -signal.SIGKILL else code

    def spawn(self, pb: Any, start_at: float, in_flight: float) -> int:
        """Fork a rehearsal of ``pb`` that starts at ``start_at`` (time.monotonic), requests taking
        ``in_flight`` seconds each way; returns its pid."""
        pid = os.fork()
        if pid == 0:
            time.sleep(max(0.0, start_at - time.monotonic()))
            self.in_flight = in_flight  # this child only
            self.child(0.0, pb)
        return pid

    def concurrent(self, rng: random.Random, kill: bool = True) -> tuple[list[str], int]:
        """Buy 10, then two square-offs of the account started at the same instant (one perhaps killed
        and started again): the account must end flat, closed once. Returns problems and kills."""
        buyer, closers = _playbook(BUY_PLAYBOOK), [_playbook(CLOSER_PLAYBOOK.format(n=n)) for n in (1, 2)]
        problems: list[str] = []
        if (code := self.run_child(None, 0.0, buyer)) != 0:
            problems.append(f"the buy exited {code}")
        start = time.monotonic() + 0.05
        pids = [self.spawn(pb, start, OVERLAP_IN_FLIGHT) for pb in closers]
        victim = rng.randrange(2) if kill else None
        kills = 0
        if victim is not None:
            time.sleep(max(0.0, start + rng.uniform(0.0, 0.3) - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[victim], signal.SIGKILL)
        for n, pid in enumerate(pids):
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code == -signal.SIGKILL:
                kills += 1
                code = self.run_child(None, 2 * ABSENT_AFTER, closers[n])  # restarted
            if code not in (0, 4):  # succeeded, or refused: the account busy
                problems.append(f"square-off {n + 1} exited {code}")
        problems += check_account(self.url)
        self.reset()
        return problems, kills

    def kill_instant(self, rng: random.Random, recovering: bool) -> float:
        """Seconds into a forked start to kill it. After an earlier kill, often early: the start is then
        still recovering from that kill (reconciling, resuming the interrupted step)."""
        if recovering and rng.random() < 0.5:
            return rng.uniform(0.0, self.child_run * 0.4)
        return rng.uniform(0.0, self.child_run * 1.1)

    def iteration(self, rng: random.Random, kills_per_iteration: int | None = None) -> tuple[Check, int]:
        """A sequence of killed starts (default: 1 to 3, or 2 to 5 in PLAIN mode, each a fresh chance to
        die with a request in flight, the later ones often during recovery from the one before), then an
        uninterrupted one, then the check. A run left failed on an unknown outcome (PLAIN mode) is
        settled by the account's next run, past absent_after, an operator's square-off."""
        if kills_per_iteration is None:
            kills_per_iteration = rng.randint(2, 5) if self.mode is Mode.PLAIN else rng.randint(1, 3)
        kills = 0
        for _ in range(kills_per_iteration):
            gap = restart_gap(rng, self.mode)
            if rng.random() < 0.25:  # exactly around a request: before it reached the broker, or after
                die = Die(rng.randint(1, 6), rng.random() < 0.5)
                killed = self.run_child(None, gap, die=die) is None
            else:
                killed = self.run_child(self.kill_instant(rng, kills > 0), gap) is None
            kills += killed
        return self.finish(rng, kills)

    def finish(self, rng: random.Random, kills: int) -> tuple[Check, int]:
        """An uninterrupted start, a settling one if needed, the check, and a fresh file for the next."""
        code = self.run_child(None, restart_gap(rng, self.mode))
        settled = False
        operator = 0
        if code == 3 and self.mode is Mode.PLAIN:
            # A step failed on an unknown outcome: a start past absent_after (an operator's rerun) settles
            # the journal with the broker, then the account's next run closes what is left open.
            code = self.run_child(None, 2 * ABSENT_AFTER)
            operator = self.run_child(None, 3 * ABSENT_AFTER, self.operator)
            settled = True
        check = check_book(self.url, self.mode, settled=settled)
        if code not in (0, 3 if settled else 0):
            check.problems.append(f"final start exited {code}")
        if settled and operator != 0:
            check.problems.append(f"the operator's square-off exited {operator}")
        self.reset()
        return check, kills


def release_paper_connections(engine: sa.Engine) -> None:
    """The paper broker keeps one raw DBAPI connection per Engine; close it before forking."""
    from runner.brokers.paper import broker as paper

    dbs = getattr(paper, "_DBS", None)
    db = dbs.pop(engine, None) if dbs is not None else None
    raw = getattr(db, "_raw", None)
    if raw is not None:
        raw.close()


@dataclass
class Check:
    problems: list[str]
    orders: int
    # What the iteration went through (PLAIN mode: evidence that both sides of absent_after were taken).
    absent: int = 0  # lookup misses taken as proof of absence (past absent_after)
    recent: int = 0  # lookup misses too recent to prove anything: the intent was left unknown
    tally: Counter[str] = field(default_factory=Counter)
    stale: list[str] = field(default_factory=list)  # journaled statuses that are not the broker's


UNSETTLED = ("pending_new", "unknown")


def check_book(db_url: str, mode: Mode = Mode.IDEMPOTENT, *, settled: bool = False) -> Check:
    """After a completed run, whatever its outcome: no client id at the broker twice, every broker order
    journaled, no step with more orders at the broker than it places (:data:`EXPECTED_ORDERS`: a second
    order under a second journaled id is a duplicate too), every journaled status the broker's, every
    intent's fate known (at the broker, or journaled ABSENT / rejected), no entry over its quantity, and
    the book flat (the square-off is an exit step: it runs after a failed step too). A succeeded run
    placed exactly :data:`EXPECTED_ORDERS` and every entry exactly once. A failed run (PLAIN mode only,
    after a settling start) failed on an outcome it refused to guess, for nothing else."""
    import json

    from runner.journal.db import make_engine

    engine = make_engine(db_url)
    problems: list[str] = []
    try:
        meta = sa.MetaData()
        orders = sa.Table("paper_orders", meta, autoload_with=engine)
        runs = sa.Table("runs", meta, autoload_with=engine)
        steps = sa.Table("steps", meta, autoload_with=engine)
        intents = sa.Table("order_intents", meta, autoload_with=engine)
        events = sa.Table("events", meta, autoload_with=engine)
        with engine.connect() as c:
            status = [
                r.status for r in c.execute(sa.select(runs.c.status).where(runs.c.playbook == "crashy"))
            ]
            others = [
                r.status for r in c.execute(sa.select(runs.c.status).where(runs.c.playbook != "crashy"))
            ]
            bodies = [json.loads(b) for (b,) in c.execute(sa.select(orders.c.body))]
            journaled = {
                r.client_order_id: r
                for r in c.execute(
                    sa.select(
                        intents.c.client_order_id, intents.c.resolution, intents.c.status, intents.c.step_id
                    )
                )
            }
            failed = [
                (r.step_id, r.message or "")
                for r in c.execute(
                    sa.select(steps.c.step_id, steps.c.message).where(steps.c.outcome == "failed")
                )
            ]
            notes = [m for (m,) in c.execute(sa.select(events.c.message))]
        # The body holds the real client id: a repeat's column value is "<id>#<n>".
        ids = Counter(str(_get(b, "client_order_id")) for b in bodies)
        problems += [f"client id {cid} at the broker {n} times" for cid, n in ids.items() if n > 1]
        problems += [f"broker order {cid} not in the journal" for cid in ids if cid not in journaled]
        per_step = Counter(journaled[cid].step_id for cid in ids if cid in journaled)
        most = {**EXPECTED_ORDERS, **OPERATOR_ORDERS}
        for step_id, n in sorted(per_step.items()):
            if n > most.get(step_id, 0):
                problems.append(f"step {step_id}: {n} orders at the broker, it places {most.get(step_id, 0)}")
        stale = _status_problems(bodies, journaled)
        if STALE_STATUS_IS_A_PROBLEM:
            problems += stale
        problems += [f"another run on the account ended {s}" for s in others if s != "succeeded"]
        buys: Counter[str] = Counter()
        sells: Counter[str] = Counter()
        for body in bodies:
            filled = int(_get(body, "filled_quantity") or 0)  # type: ignore[call-overload]
            (buys if _get(body, "side") == "BUY" else sells)[_instrument_key(body)] += filled
        entries = [(k, q, buys, sells) for k, q in EXPECTED_BUYS.items()]
        entries += [(k, q, sells, buys) for k, q in EXPECTED_SELLS.items()]
        problems += [
            f"{k}: not flat, bought {buys[k]} sold {sells[k]}" for k in buys | sells if buys[k] != sells[k]
        ]
        for key, qty, entry, _ in entries:
            if entry[key] > qty:
                problems.append(f"{key}: entered {entry[key]}, more than the {qty} asked for")
        check = Check(
            problems,
            len(bodies),
            absent=sum(any(s in m for s in PROVEN_ABSENT) for m in notes),
            recent=sum(any(s in m for s in TOO_RECENT) for m in notes),
        )
        check.tally["re-sends"] += sum(RESENT in m for m in notes)
        check.stale = stale
        if stale:
            check.tally["journal status not the broker's"] += 1
        if status == ["succeeded"]:
            check.tally["succeeded"] += 1
            if len(bodies) != (want := sum(EXPECTED_ORDERS.values())):
                problems.append(f"{len(bodies)} orders at the broker, the playbook places {want}")
            # entries exactly once (+ their exits)
            for key, qty, entry, exit_ in entries:
                if entry[key] != qty or exit_[key] != qty:
                    problems.append(
                        f"{key}: entered {entry[key]} exited {exit_[key]}, expected {qty} each way"
                    )
        elif not (settled and mode is Mode.PLAIN and status == ["failed"]):
            problems.append(f"run status {status}")
        else:
            check.tally["failed on an unknown outcome"] += 1
            for step_id, message in failed:
                if "outcome unknown" not in message:
                    problems.append(f"step {step_id} failed for another reason: {message}")
        # Every intent's fate is known: at the broker (and not journaled absent), or proven never there.
        for cid, row in journaled.items():
            at_broker = cid in ids
            if at_broker and row.resolution == "absent":
                problems.append(f"{cid} journaled absent but at the broker")
            elif row.status in UNSETTLED and row.resolution != "absent" and (settled or at_broker):
                problems.append(f"{cid} still {row.status} after a settling start")
            elif not at_broker and row.resolution != "absent" and row.status not in ("rejected", *UNSETTLED):
                problems.append(f"{cid} is {row.status}/{row.resolution} in the journal, not at the broker")
        return check
    finally:
        engine.dispose()


def check_account(db_url: str) -> list[str]:
    """Any runs on one account: no client id at the broker twice, every broker order journaled, every
    instrument flat and never closed beyond what was bought or sold."""
    import json

    from runner.journal.db import make_engine

    engine = make_engine(db_url)
    try:
        meta = sa.MetaData()
        orders = sa.Table("paper_orders", meta, autoload_with=engine)
        intents = sa.Table("order_intents", meta, autoload_with=engine)
        with engine.connect() as c:
            bodies = [json.loads(b) for (b,) in c.execute(sa.select(orders.c.body))]
            journaled = {cid for (cid,) in c.execute(sa.select(intents.c.client_order_id))}
    finally:
        engine.dispose()
    ids = Counter(str(_get(b, "client_order_id")) for b in bodies)
    problems = [f"client id {cid} at the broker {n} times" for cid, n in ids.items() if n > 1]
    problems += [f"broker order {cid} not in the journal" for cid in ids if cid not in journaled]
    net: Counter[str] = Counter()
    for body in bodies:
        filled = int(_get(body, "filled_quantity") or 0)  # type: ignore[call-overload]
        net[_instrument_key(body)] += filled if _get(body, "side") == "BUY" else -filled
    problems += [f"{key}: not flat, net {n} (closed twice?)" for key, n in net.items() if n]
    return problems


def _status_problems(bodies: list[dict], journaled: dict[str, Any]) -> list[str]:
    """Every journaled status of an order at the broker is the broker's own at the end."""
    out = []
    for body in bodies:
        cid = str(_get(body, "client_order_id"))
        row = journaled.get(cid)
        theirs = str(_get(body, "status"))
        if row is not None and row.status != theirs:
            out.append(f"{cid}: journal says {row.status}, the broker {theirs}")
    return out


def _get(body: dict, name: str) -> object:
    if name in body:
        return body[name]
    order = body.get("order") or {}
    return order.get(name)


def _instrument_key(body: dict) -> str:
    ins = _get(body, "instrument")
    if isinstance(ins, str):
        return ins
    assert isinstance(ins, dict)
    from runner.journal.records import instrument_from_json

    return instrument_from_json(__import__("json").dumps(ins)).key
