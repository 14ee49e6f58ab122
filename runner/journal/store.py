"""The journal: runs, steps, order intents, every broker call, status transitions, fills and events.

SQLAlchemy Core only (no dialect-specific SQL in queries) so PostgreSQL can replace SQLite. Two rules
carry the weight of "never send an order twice":

* an intent row is committed before the request leaves (:meth:`Journal.add_intent`);
* an order's status only moves along :data:`runner.model.TRANSITIONS`; an illegal move is recorded as an
  error row and the stored status is left alone (:meth:`Journal.record_order` raises after recording).

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row survives a killed process (the
crash test kills with SIGKILL); only an OS crash / power loss can drop the last commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runner.journal import tables
from runner.journal.db import create_all
from runner.journal.errors import DuplicateIntent, JournalError, RunBusy
from runner.journal.fastpath import (
    COUNT_BY_PURPOSE,
    DEL_ARMED_INTENT,
    DEL_RUN,
    DEL_RUN_STEPS,
    INS_CALL,
    INS_EVENT,
    INS_INTENT,
    INS_RUN,
    INS_STEP,
    INS_TRANSITION,
    INTENT_FILTERS,
    SEL_EXISTS,
    SEL_INTENT,
    SEL_RUN,
    SEL_RUN_INTENTS,
    SEL_RUNNING_OF_ACCOUNT,
    SEL_STATE,
    SEL_STEP_ID,
    SEL_STEPS,
    UPD_RESOLUTION,
    UPD_RUN_DEAD,
    UPD_RUN_FINISH,
    UPD_RUN_INTERRUPTED,
    UPD_RUN_REOPEN,
    UPD_RUN_RESTART,
    UPD_RUN_TOUCH,
    UPD_SENDING,
    UPD_STATUS,
    UPD_STEP_FINISH,
    Stmt,
    _Fast,
    fast_for,
    intents_stmt,
)
from runner.journal.order_apply import apply_order
from runner.journal.records import (
    OWNERLESS_STALE_AFTER,
    Intent,
    RunRecord,
    StepRecord,
    dead_holder,
    intent_from_row,
    intent_values,
    run_from_row,
    step_from_row,
)
from runner.journal.tables import (
    Purpose,
    Resolution,
    RunStatus,
    StepOutcome,
    broker_calls,
    order_intents,
    runs,
    status_transitions,
    steps,
)
from runner.model import (
    Order,
    OrderStatus,
    Product,
)


class Journal:
    """Synchronous, short transactions; every write method commits before it returns."""

    @property
    def _fast(self) -> _Fast:
        """The calling thread's hot-path connection (:func:`runner.journal.fastpath.own_connection`)."""
        return fast_for(self.engine)

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            from runner.journal.db import shared_engine

            engine = shared_engine(url)
        self.engine = engine
        create_all(engine, tables.metadata)  # by module: see migrations.METADATA_MODULES
        from runner.liveness import ProcessRegistry

        self.processes = ProcessRegistry(engine)  # run owners' liveness (creates ``processes``)

    def close(self) -> None:
        """Engines are shared per URL in a process (runner.journal.db); nothing to release per journal."""

    def _read(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_begin="DEFERRED")

    # --- runs -------------------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        playbook: str,
        account: str,
        scheduled_for: dt.datetime,
        mode: str,
        now: dt.datetime,
        owner: str | None = None,
        timezone: str | None = None,
        master_sha: str | None = None,
    ) -> RunRecord:
        """Create the run, or reopen it (``resumed=True``) when this run id was started before, owned by
        ``owner`` (a runner.liveness token). Raises :class:`RunBusy` when the run is RUNNING under
        another live process, or another process created or reopened it between our read and our
        write (a compare-and-set on the owner seen: never two processes in one run)."""
        key = {"b_run": run_id}
        seen = self.get_run(run_id)
        if seen is not None:
            if seen.account != account:
                raise JournalError(f"run {run_id} belongs to account {seen.account!r}, not {account!r}")
            if seen.status is RunStatus.RUNNING and seen.owner != owner and self.holder_alive(seen):
                raise RunBusy(run_id, seen.owner)
        with self._fast.transaction() as t:
            if seen is None:
                try:
                    t.execute(
                        INS_RUN,
                        {
                            "run_id": run_id,
                            "playbook": playbook,
                            "account": account,
                            "mode": mode,
                            "scheduled_for": scheduled_for,
                            "started_at": now,
                            "updated_at": now,
                            "starts": 1,
                            "status": RunStatus.RUNNING.value,
                            "owner": owner,
                            "timezone": timezone,
                            "master_sha": master_sha,  # the instrument-master snapshot resolved against
                        },
                    )
                except self._fast.integrity_error:
                    won = False
                else:
                    return run_from_row(t.rows(SEL_RUN, key)[0])
            else:
                params = {"b_run": run_id, "b_seen": seen.owner or "", "updated_at": now}
                won = t.execute(UPD_RUN_RESTART, {**params, "owner": owner or seen.owner}).rowcount == 1
                if won:
                    return run_from_row(t.rows(SEL_RUN, key)[0], resumed=True)
        holder = self.get_run(run_id)
        raise RunBusy(run_id, holder.owner if holder is not None else None)

    def holder_alive(self, run: RunRecord) -> bool:
        """Is the process executing this run alive? By its owner token (runner.liveness); a run with no
        owner (journaled before owners existed) while anything of it was written in the last
        :data:`OWNERLESS_STALE_AFTER` (database clock)."""
        if run.owner is not None:
            return self.processes.is_alive(run.owner)
        last = self.last_activity(run.run_id)
        return last is not None and self.processes.db_now() - last < OWNERLESS_STALE_AFTER

    def close_dead_runs(self, account: str, now: dt.datetime, *, closer: str) -> list[RunRecord]:
        """Close (INTERRUPTED, saying whose process is gone and who closed it) every RUNNING run of
        ``account`` whose process is gone, so that its unsettled intents are reconciled like any
        finished run's. Conditional on the owner seen: a run reopened meanwhile stays open. A run whose
        fire claim a survivor may still take over is left to it (:func:`claim_leases.held_for_takeover`)."""
        rows = self._fast.read(SEL_RUNNING_OF_ACCOUNT, {"b_account": account})  # every prepare: fast path
        running = [run_from_row(r) for r in rows]
        dead = [run for run in running if not self.holder_alive(run)]
        from runner.journal.claim_leases import held_for_takeover

        held = held_for_takeover(self.engine, [run.run_id for run in dead]) if dead else set()
        closed: list[RunRecord] = []
        for run in dead:
            if run.run_id in held:  # its fire claim's takeover owns it (never looked up meanwhile)
                continue
            message = f"interrupted: {dead_holder(run)}; closed by {closer}"
            values = {"status": RunStatus.INTERRUPTED.value, "finished_at": now, "updated_at": now}
            params = {"b_run": run.run_id, "b_running": RunStatus.RUNNING.value, "b_seen": run.owner or ""}
            with self._fast.transaction() as t:
                if t.execute(UPD_RUN_DEAD, {**params, **values, "message": message}).rowcount == 1:
                    closed.append(run)
        return closed

    def dead_runs(self, account: str | None = None) -> list[RunRecord]:
        """RUNNING runs whose process is gone (read-only: ``runner status``)."""
        q = sa.select(runs).where(runs.c.status == RunStatus.RUNNING.value)
        if account is not None:
            q = q.where(runs.c.account == account)
        with self._read() as c:
            running = [run_from_row(r) for r in c.execute(q).mappings()]
        return [r for r in running if not self.holder_alive(r)]

    def finish_run(
        self, run_id: str, status: RunStatus, now: dt.datetime, message: str | None = None
    ) -> None:
        values = {"status": status.value, "finished_at": now, "updated_at": now, "message": message}
        self._write(UPD_RUN_FINISH, {"b_run": run_id, **values})

    def close_interrupted_run(
        self, run_id: str, now: dt.datetime, message: str, status: RunStatus = RunStatus.INTERRUPTED
    ) -> None:
        """``status`` (INTERRUPTED: its daemon died mid-run) with ``message``, only if the run is still
        RUNNING."""
        values = {"status": status.value, "finished_at": now, "updated_at": now, "message": message}
        self._write(UPD_RUN_INTERRUPTED, {"b_run": run_id, "b_running": RunStatus.RUNNING.value, **values})

    def reopen_run(self, run_id: str, now: dt.datetime) -> None:
        values = {"status": RunStatus.RUNNING.value, "finished_at": None, "updated_at": now}
        self._write(UPD_RUN_REOPEN, {"b_run": run_id, **values})

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._fast.read(SEL_RUN, {"b_run": run_id})
        return run_from_row(found[0]) if found else None

    def has_run(self, run_id: str) -> bool:
        return self.get_run(run_id) is not None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        with self._read() as c:
            rows = c.execute(sa.select(runs).where(runs.c.run_id.startswith(prefix, autoescape=True)))
            return [run_from_row(r) for r in rows.mappings()]

    def list_runs(self, limit: int = 50, playbook: str | None = None) -> list[RunRecord]:
        q = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
        if playbook:
            q = q.where(runs.c.playbook == playbook)
        with self._read() as c:
            return [run_from_row(r) for r in c.execute(q).mappings()]

    def last_activity(self, run_id: str) -> dt.datetime | None:
        """The latest time anything of this run was journaled (rehearse resumes its clock from here)."""
        with self._read() as c:
            candidates = [
                c.execute(sa.select(sa.func.max(runs.c.updated_at)).where(runs.c.run_id == run_id)).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.started_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.finished_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(order_intents.c.updated_at)).where(order_intents.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(broker_calls.c.at)).where(broker_calls.c.run_id == run_id)
                ).scalar(),
            ]
        # func.max bypasses the type decorator on some dialects: normalise here.
        found: list[dt.datetime] = []
        for v in candidates:
            if isinstance(v, str):  # SQLite hands back text for an aggregate over a DateTime column
                v = dt.datetime.fromisoformat(v)
            if isinstance(v, dt.datetime):
                found.append(v if v.tzinfo else v.replace(tzinfo=dt.UTC))
        return max(found) if found else None

    # --- steps ------------------------------------------------------------------------------------

    def steps_of(self, run_id: str) -> dict[str, StepRecord]:
        return {r["step_id"]: step_from_row(r) for r in self._fast.read(SEL_STEPS, {"b_run": run_id})}

    def start_step(
        self,
        run_id: str,
        step_id: str,
        *,
        position: int,
        kind: str,
        now: dt.datetime,
        parallel_group: str | None = None,
    ) -> None:
        with self._fast.transaction() as t:
            if not t.rows(SEL_STEP_ID, {"b_run": run_id, "b_step": step_id}):
                t.execute(
                    INS_STEP,
                    {
                        "run_id": run_id,
                        "step_id": step_id,
                        "position": position,
                        "kind": kind,
                        "outcome": StepOutcome.RUNNING.value,
                        "started_at": now,
                        "parallel_group": parallel_group,
                    },
                )
            t.execute(UPD_RUN_TOUCH, {"b_run": run_id, "updated_at": now})

    def finish_step(
        self, run_id: str, step_id: str, outcome: StepOutcome, now: dt.datetime, message: str | None = None
    ) -> None:
        self._write(
            UPD_STEP_FINISH,
            {
                "b_run": run_id,
                "b_step": step_id,
                "outcome": outcome.value,
                "message": message,
                "finished_at": now,
            },
        )

    def discard_armed(self, run_id: str, client_order_id: str) -> None:
        """Remove a run written ahead of its instant (run, first step, intent: see
        :meth:`runner.engine.core.Engine.prepare`) whose request this process knows it never sent: halted or
        shut down before the instant, or released too late. Refuses (JournalError, nothing removed)
        unless the intent is untouched: PENDING_NEW, never acknowledged, no broker call journaled."""
        with self._fast.transaction() as t:
            key = {"b_cid": client_order_id, "b_run": run_id, "b_status": OrderStatus.PENDING_NEW.value}
            gone = t.execute(DEL_ARMED_INTENT, key).rowcount
            if gone != 1:
                raise JournalError(f"{client_order_id} of run {run_id} is not an untouched armed intent")
            if t.rows(SEL_RUN_INTENTS, {"b_run": run_id}):
                raise JournalError(f"run {run_id} has other intents; not discarding it")
            t.execute(DEL_RUN_STEPS, {"b_run": run_id})
            t.execute(DEL_RUN, {"b_run": run_id})

    # --- intents ----------------------------------------------------------------------------------

    def add_intent(self, intent: Intent) -> None:
        """Commit the intent. Raises :class:`DuplicateIntent` if its id or slot is already journaled."""
        self.add_intents([intent])

    def add_intents(self, intents: Sequence[Intent]) -> None:
        """Commit several intents atomically (the legs of a native spread: all or none)."""
        rows = [intent_values(i) for i in intents]
        try:
            with self._fast.transaction() as t:
                t.executemany(INS_INTENT, rows)
        except self._fast.integrity_error:
            raise DuplicateIntent(", ".join(i.client_order_id for i in intents)) from None

    def get_intent(self, client_order_id: str) -> Intent | None:
        found = self._fast.read(SEL_INTENT, {"b_cid": client_order_id})
        return intent_from_row(found[0]) if found else None

    def has_intent(self, client_order_id: str) -> bool:
        """Whether this client id is journaled (ours); cheaper than :meth:`get_intent`."""
        return bool(self._fast.read(SEL_EXISTS, {"b_cid": client_order_id}))

    def intents(
        self,
        *,
        run_id: str | None = None,
        step_id: str | None = None,
        slot: str | None = None,
        account: str | None = None,
        resolution: Iterable[Resolution] | None = None,
        statuses: Iterable[OrderStatus] | None = None,
    ) -> list[Intent]:
        given = {"run_id": run_id, "step_id": step_id, "slot": slot, "account": account}
        filters = tuple(name for name in INTENT_FILTERS if given[name] is not None)
        params: dict[str, Any] = {f"b_{name}": given[name] for name in filters}
        res = [r.value for r in resolution] if resolution is not None else None
        sts = [s.value for s in statuses] if statuses is not None else None
        for prefix, values in (("b_res", res), ("b_st", sts)):
            for i, v in enumerate(values or ()):
                params[f"{prefix}{i}"] = v
        stmt = intents_stmt(filters, -1 if res is None else len(res), -1 if sts is None else len(sts))
        return [intent_from_row(r) for r in self._fast.read(stmt, params)]

    def client_ids_of_playbook(self, playbook: str) -> set[str]:
        q = (
            sa.select(order_intents.c.client_order_id)
            .join(runs, runs.c.run_id == order_intents.c.run_id)
            .where(runs.c.playbook == playbook)
        )
        with self._read() as c:
            return {r[0] for r in c.execute(q)}

    def client_ids_of_account(self, account: str, *, since: dt.datetime) -> dict[str, Product]:
        """Client id -> product of the account's intents created since ``since`` (for
        :class:`runner.brokers.base.ClientIdRegistry`)."""
        c = order_intents.c
        q = sa.select(c.client_order_id, c.product).where(c.account == account, c.created_at >= since)
        with self._read() as conn:
            return {cid: Product(product) for cid, product in conn.execute(q)}

    def scope_intents(
        self, account: str, since: dt.datetime, *, playbook: str | None = None, tag: str | None = None
    ) -> list[Intent]:
        """The account's intents journaled since ``since`` that belong to runs of ``playbook`` and / or
        carry ``tag``: what a scoped square-off owns (runner.engine.steps.square_off.scope_net)."""
        c = order_intents.c
        q = sa.select(order_intents).where(c.account == account, c.created_at >= since)
        if playbook is not None:
            q = q.join(runs, runs.c.run_id == c.run_id).where(runs.c.playbook == playbook)
        if tag is not None:
            q = q.where(c.tag == tag)
        with self._read() as conn:
            return [intent_from_row(r) for r in conn.execute(q.order_by(c.created_at)).mappings()]

    def count_intents(self, run_id: str, *, exclude: Sequence[Purpose] = ()) -> int:
        skip = {p.value for p in exclude}
        counts = self._fast.read(COUNT_BY_PURPOSE, {"b_run": run_id})
        return sum(int(r["count"]) for r in counts if r["purpose"] not in skip)

    def set_resolution(self, client_order_id: str, resolution: Resolution, now: dt.datetime) -> None:
        self.set_resolutions((client_order_id,), resolution, now)

    def set_resolutions(
        self, client_order_ids: Iterable[str], resolution: Resolution, now: dt.datetime
    ) -> None:
        """Several intents (the legs of a native spread) in one commit."""
        rows = [{"b_cid": c, "resolution": resolution.value, "updated_at": now} for c in client_order_ids]
        with self._fast.transaction() as t:
            t.executemany(UPD_RESOLUTION, rows)

    def mark_sending(self, client_order_ids: Iterable[str], now: dt.datetime) -> None:
        """PENDING again with ``sent_at`` = ``now``, in one commit, before a re-send of these intents (one,
        or the legs of a native spread): a death between the send and its reply leaves them PENDING and
        their absence is measured from this send."""
        rows = [
            {"b_cid": c, "resolution": Resolution.PENDING.value, "sent_at": now, "updated_at": now}
            for c in client_order_ids
        ]
        with self._fast.transaction() as t:
            t.executemany(UPD_SENDING, rows)

    def reconcilable_intents(
        self, account: str, run_id: str, *, since: dt.datetime | None = None
    ) -> list[Intent]:
        """Non-terminal intents (unsettled PENDING_NEW / UNKNOWN whatever their resolution, and open ones,
        whose fills or cancels may not be journaled) of ``account`` that belong to ``run_id`` or to a
        run no longer RUNNING. A RUNNING run other than ``run_id`` is live
        elsewhere (another playbook of the daemon on this account) or crashed, and then its own restart
        reconciles it: looking its orders up from here could call one absent while its request is in
        flight."""
        c = order_intents.c
        q = (
            sa.select(order_intents)
            .join(runs, runs.c.run_id == c.run_id)
            .where(
                c.account == account,
                c.status.in_(sorted(s.value for s in OrderStatus if not s.is_terminal)),
                sa.or_(c.run_id == run_id, runs.c.status != RunStatus.RUNNING.value),
                sa.or_(c.run_id == run_id, sa.true() if since is None else c.created_at >= since),
            )
            .order_by(c.created_at, c.client_order_id)
        )
        with self._read() as conn:
            return [intent_from_row(r) for r in conn.execute(q).mappings()]

    def _write(self, stmt: Stmt, params: Mapping[str, Any]) -> None:
        """One statement in its own committed transaction."""
        with self._fast.transaction() as t:
            t.execute(stmt, params)

    def record_order(
        self,
        order: Order,
        now: dt.datetime,
        *,
        call: Mapping[str, Any] | None = None,
        resolution: Resolution = Resolution.CONFIRMED,
    ) -> OrderStatus:
        """Apply the broker's view of one of our orders: status (checked), broker id, fills.

        ``call`` (a broker_calls row) is written in the same transaction: one commit per broker answer.
        ``resolution``: CONFIRMED (the broker has it), or ABSENT for a refusal made on our side that the
        broker never saw (e.g. the kill switch).
        Returns the stored status. Raises :class:`IllegalTransition` after recording an illegal move
        (status left unchanged).
        """
        with self._fast.transaction() as t:
            if call is not None:
                t.execute(INS_CALL, call)
            illegal = apply_order(t, order, now, resolution)
        if illegal is not None:
            raise illegal
        return order.status

    def record_orders(self, orders: Sequence[Order], now: dt.datetime) -> int:
        """Apply many broker reports (e.g. one day-book read) in ONE commit. Reports of orders that are
        not ours are ignored; an illegal transition is recorded (row + error event), not raised.
        Returns how many illegal transitions were recorded."""
        bad = 0
        with self._fast.transaction() as t:
            for order in orders:
                bad += apply_order(t, order, now, Resolution.CONFIRMED) is not None
        return bad

    def mark_unknown(self, client_order_id: str, now: dt.datetime) -> None:
        """The request may have reached the broker: status UNKNOWN until a lookup says otherwise."""
        with self._fast.transaction() as t:
            row = t.execute(SEL_STATE, {"b_cid": client_order_id}).fetchone()
            old = None if row is None else OrderStatus(row[0])
            if old is None or old.is_terminal:
                return
            if old is not OrderStatus.UNKNOWN:
                t.execute(
                    INS_TRANSITION,
                    {
                        "client_order_id": client_order_id,
                        "old_status": old.value,
                        "new_status": OrderStatus.UNKNOWN.value,
                        "legal": True,
                        "raw_status": None,
                        "at": now,
                    },
                )
            t.execute(
                UPD_STATUS,
                {"b_cid": client_order_id, "status": OrderStatus.UNKNOWN.value, "updated_at": now},
            )

    # --- calls, events, reads for history/show ------------------------------------------------------

    def record_call(self, call: Mapping[str, Any]) -> None:
        self._write(INS_CALL, call)

    def record_event(
        self,
        run_id: str | None,
        kind: str,
        message: str,
        now: dt.datetime,
        *,
        level: str = "info",
        step_id: str | None = None,
        client_order_id: str | None = None,
    ) -> None:
        self._write(
            INS_EVENT,
            {
                "run_id": run_id,
                "step_id": step_id,
                "client_order_id": client_order_id,
                "level": level,
                "kind": kind,
                "message": message,
                "at": now,
            },
        )

    def rows(self, table: sa.Table, run_id: str) -> list[dict[str, Any]]:
        q = sa.select(table).where(table.c.run_id == run_id)
        if "id" in table.c:
            q = q.order_by(table.c.id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def transitions(self, client_order_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(status_transitions)
            .where(status_transitions.c.client_order_id == client_order_id)
            .order_by(status_transitions.c.id)
        )
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def calls(self, *, run_id: str | None = None, client_order_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(broker_calls).order_by(broker_calls.c.id)
        if run_id is not None:
            q = q.where(broker_calls.c.run_id == run_id)
        if client_order_id is not None:
            q = q.where(broker_calls.c.client_order_id == client_order_id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]
