"""The real executor: a fire runs the engine (mode ``scheduled``) on the account's kill-switch-guarded
broker, prepared ahead of its instant."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from runner.brokers.primed import adapter_of
from runner.clock import Clock
from runner.daemon.release import Fire, FireResult
from runner.journal.fires import FireState
from runner.journal.offloop import off_loop

log = logging.getLogger("runner.scheduler")


# An (account, instant)'s shared connect/reconcile is kept this long after the instant: fires prepared
# after it (taken over from a dead daemon, caught up) share it too, instead of each connecting and
# reconciling the account again.
SETUP_KEPT = dt.timedelta(minutes=1)

class BrokerPool(dict[str, Any]):
    """account name -> GuardedBroker, created on first use and shared by every playbook of the account."""

    def __init__(self, accounts: Mapping[str, Any], view: Any, **context: Any) -> None:
        super().__init__()
        self.accounts = accounts
        self.view = view
        self.context = context
        self._parsing = threading.Lock()  # one parse per master: callers after the first hit the cache

    def preload_masters(self, accounts: Iterable[str]) -> None:
        """In a worker thread: parse the instrument masters of ``accounts`` not open yet, so building
        their brokers on the event loop (:meth:`get_broker`) finds them parsed. A big master parsed on
        the loop stalled it, and the heartbeat with it, for seconds (100 accounts: ~30 s; the peers
        dropped the daemon from the membership). Errors are left for :meth:`get_broker` to raise."""
        from runner.brokers.registry import load_master

        for name in accounts:
            acct = self.accounts.get(name)
            if acct is None or name in self:
                continue
            with self._parsing, contextlib.suppress(Exception):
                load_master(acct, **self.context)

    def get_broker(self, account: str) -> Any:
        broker = self.get(account)
        if broker is None:
            from runner.brokers.registry import create_broker
            from runner.engine.killswitch import GuardedBroker

            try:
                acct = self.accounts[account]
            except KeyError:
                raise LookupError(f"unknown account {account!r}") from None
            broker = self[account] = GuardedBroker(create_broker(acct, **self.context), self.view)
        return broker

    async def aclose(self) -> None:
        """Close every broker opened through the pool (at daemon shutdown) and forget them."""
        from runner.brokers.closing import close_brokers

        opened = list(self.values())
        self.clear()
        await close_brokers(opened)


async def close_opened(brokers: Mapping[str, Any]) -> None:
    """Close the brokers a daemon opened itself (its pool's); brokers a caller handed in are the caller's."""
    if isinstance(brokers, BrokerPool):
        await brokers.aclose()


class EngineExecutor:
    """Runs a fire with the engine (mode ``scheduled``) on the account's guarded broker.

    The daemon calls :meth:`prepare` when it wakes, ``lead`` seconds early: the broker is connected,
    unsettled intents reconciled and the run armed (first order built, risk-checked and journaled with
    its run and step rows in a group commit shared by the runs prepared together), so at the instant
    only the request itself is left. Fires of one account due at the same instant share one connect and one
    reconcile."""

    def __init__(self, pool: BrokerPool, journal: Any, clock: Clock) -> None:
        from runner.journal.groupcommit import group_commit_for

        self.pool = pool
        self.journal = journal
        self.clock = clock
        self.commit = group_commit_for(journal.engine)
        self.commit_off_loop = group_commit_for(journal.engine, off_loop=True)  # fires taken over
        self._setups: dict[tuple[str, dt.datetime], asyncio.Future[bool]] = {}
        self._due: dict[tuple[str, dt.datetime], int] = {}  # (account, instant) -> fires prepared for it
        self._warming: set[asyncio.Future[None]] = set()  # connections being opened (held until done)
        self._in_flight: dict[str, int] = {}  # account -> runs of it executing now

    async def __call__(self, fire: Fire) -> FireResult:
        return await (await self.prepare(fire)).run()

    async def prepare(self, fire: Fire) -> _PreparedRun:
        from runner.engine.core import Engine, RunOptions

        pb = fire.playbook
        preload = getattr(self.pool, "preload_masters", None)
        if preload is not None and pb.account not in self.pool:  # its first fire here (taken over, gained)
            await asyncio.to_thread(preload, [pb.account])  # the master parsed off the loop
        broker = self.pool.get_broker(pb.account)
        now = self.clock.now()
        for key in [k for k in self._setups if k[1] < now - SETUP_KEPT]:
            del self._setups[key]
            self._due.pop(key, None)
        key = (pb.account, fire.scheduled_for)
        shared = self._setups.get(key)
        lead = shared is None
        if lead:
            shared = self._setups[key] = asyncio.get_running_loop().create_future()
            # Another run of this account still executing owns its in-flight intents: reconciling now
            # could take one of its requests for "never arrived". Its own gateway resolves them.
            connect, reconcile = True, not self._in_flight.get(pb.account)

        def build(connect: bool, reconcile: bool) -> Engine:
            options = RunOptions(
                scheduled_for=fire.scheduled_for,
                mode="scheduled",
                connect=connect,
                reconcile=reconcile,
                run_id=fire.run_id,  # the id claimed with the fire, never re-derived
                # a fire taken over is prepared at its instant, not ahead: its journal work off the loop
                journal_off_loop=fire.taken,
            )
            return Engine(pb, broker, self.journal, self.clock, account=pb.account, options=options)

        def built_and_looked_up(connect: bool, reconcile: bool) -> tuple[Engine, bool]:  # one hop, not two
            return build(connect, reconcile), self.journal.get_run(fire.run_id) is None

        early: asyncio.Future[tuple[Engine, bool]] | None = None
        if not lead:
            assert shared is not None
            if fire.taken:  # built and looked up while the account's lead connects and reconciles
                early = asyncio.ensure_future(off_loop(built_and_looked_up, False, False))
            try:
                done = await asyncio.shield(shared)
            except BaseException:
                if early is not None:
                    early.cancel()
                raise
            connect = reconcile = not done

        def set_up() -> None:  # connected and reconciled: the account's other fires go on meanwhile
            if lead and shared is not None and not shared.done():
                shared.set_result(True)

        try:
            if fire.taken:
                if early is not None and not connect:
                    engine, absent = await early
                else:
                    if early is not None:  # the lead failed: this one connects and reconciles itself
                        await asyncio.gather(early, return_exceptions=True)
                    engine, absent = await off_loop(built_and_looked_up, connect, reconcile)
                await engine.prepare(self.commit_off_loop, run_absent=absent, set_up=set_up)
            else:
                engine = build(connect, reconcile)
                await engine.prepare(self.commit, set_up=set_up)
        except BaseException:
            if lead and shared is not None and not shared.done():
                shared.set_result(False)  # the others connect / reconcile on their own
            raise
        set_up()
        # every fire of the account sends at the instant: a connection each, opened meanwhile. Not awaited:
        # a connect the broker is slow to accept (a full listen backlog: SYN retried after 1 s) must not
        # hold up preparing the fire (nor arming the next ones: 1,000 awaited at the lead missed the instant).
        # An armed order the adapter can prime gets its request built on a connection of its own instead
        # A fire taken over is prepared after its instant and sends at once: a connection opened or a
        # request primed for it now would race its own send, and cost the survivor's loop meanwhile.
        if fire.taken:
            return _PreparedRun(self, engine, pb.account)
        armed = engine.armed_request
        if armed is not None and adapter_of(broker) is not None:
            task = asyncio.ensure_future(_prime(broker, armed, pb.account))
        else:
            due = self._due[key] = self._due.get(key, 0) + 1
            task = asyncio.ensure_future(_warm(broker, due, pb.account))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)
        return _PreparedRun(self, engine, pb.account)


async def _warm(broker: Any, sends: int, account: str) -> None:
    from runner.brokers.warm import warm

    try:
        await warm(broker, sends)
    except Exception:  # best effort: a send opens its own connection, as it would have
        log.warning("warming %d connections for account %s failed", sends, account, exc_info=True)


async def _prime(broker: Any, request: Any, account: str) -> None:
    from runner.brokers.primed import prime

    try:
        await prime(broker, request)
    except Exception:  # best effort: the place at the instant builds and connects as it always did
        log.warning("priming %s for account %s failed", request.client_order_id, account, exc_info=True)


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

    def send_armed(self, released: dt.datetime | None) -> bool:
        """The armed first request written now, ahead of the run's path (Engine.send_armed)."""
        return bool(self.engine.send_armed(released))

    def forfeit(self) -> None:
        """The claim's lease lapsed: drop what was prepared without writing to the run (a survivor may
        have re-armed the same run id); only this process's account lease is given back."""
        from runner.brokers.primed import unprime
        from runner.engine.account_lease import drop_lease

        staged, self.engine._staged = self.engine._staged, None
        if staged is not None:
            unprime(self.engine.gateway.broker, staged.intent.client_order_id)
        drop_lease(self.engine)

    async def abandon(self, reason: str, halted: bool) -> None:
        from runner.journal.tables import RunStatus

        await self.engine.abandon(reason, RunStatus.REFUSED if halted else RunStatus.STOPPED)
