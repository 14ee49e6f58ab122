"""What an adapter resolves instruments against: :func:`master_for`, the one way adapters get a master.

1. ``Account.instruments`` (a file) when set: a local override, as before snapshots existed.
2. Else the account's last good synced snapshot (:mod:`runner.instruments.sync`). One older than today's
   trading day (account zone) is used with a warning; one older than :data:`MAX_SNAPSHOT_AGE_DAYS`
   days is refreshed first (a failed refresh is an error: contracts, lots and expiries move).
3. Else (never synced) the master is synced now; a quarantined download is an error.

The sha256 resolved against is remembered per account (:func:`resolved_sha`) and journaled on the run
(``runs.master_sha``). Parsed masters are kept per sha for the process (the daemon builds brokers often).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.accounts import Account
from runner.brokers.instruments import InstrumentMaster

log = logging.getLogger("runner.instruments")

# A snapshot this many days older than today's trading day is refreshed before use: a long weekend
# (Friday's master on Tuesday) is fine, a forgotten sync for a week is not.
MAX_SNAPSHOT_AGE_DAYS = 4

_resolved: dict[str, str] = {}  # account name -> sha256 of the master its broker was built with
_cache: dict[str, InstrumentMaster] = {}  # sha256 -> parsed master
# (sha256, broker kind, loader) -> a parsed override file (100 accounts naming one file: one parse, not 100)
_file_cache: dict[tuple[str, str, Callable[[str], InstrumentMaster] | None], InstrumentMaster] = {}


def resolved_sha(account: str) -> str | None:
    """The sha256 of the master this process last built ``account``'s broker with (None: none)."""
    return _resolved.get(account)


def _file_sha(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run_sync(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine from synchronous code, also when called inside a running loop (a factory called
    by async code): then in a worker thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


def master_for(
    account: Account,
    *,
    db_url: str | None = None,
    now: dt.datetime | None = None,
    load_file: Callable[[str], InstrumentMaster] | None = None,
) -> InstrumentMaster:
    """The master ``account``'s adapter resolves against (see the module doc). ``load_file`` reads an
    override file where the adapter accepts more than the generic CSV. Raises LookupError (exit 5)
    when there is none to be had."""
    if account.instruments:
        sha = _file_sha(account.instruments)
        key = (sha, account.broker, load_file)  # accounts sharing one file share its parse, as snapshots do
        master = _file_cache.get(key)
        if master is None:
            load = load_file or (lambda p: InstrumentMaster.load(p, broker=account.broker))
            master = _file_cache[key] = load(account.instruments)
        _resolved[account.name] = sha
        return master
    from runner.instruments import snapshots
    from runner.instruments.index import SnapshotIndex
    from runner.instruments.sync import SyncError, load_snapshot, sync_account, trading_day
    from runner.journal.db import shared_engine

    now = now or dt.datetime.now(dt.UTC)
    engine = shared_engine(db_url)
    snap = SnapshotIndex(engine).last_good(account.name)
    today = trading_day(account, now)
    if snap is None or (today - snap.trading_day).days > MAX_SNAPSHOT_AGE_DAYS:
        why = "no snapshot yet" if snap is None else f"the last good snapshot is of {snap.trading_day}"
        log.warning("instrument master of account %s: %s; syncing now", account.name, why)
        state = snapshots.state_dir(db_url)
        try:
            result = _run_sync(lambda: sync_account(account, engine, state=state, now=now))
        except SyncError as exc:
            raise LookupError(f"{exc} ({why}; `runner instruments sync {account.name}`)") from None
        if result.in_force is None or result.in_force.trading_day != today:
            reasons = "; ".join(a.message for a in result.anomalies)
            raise LookupError(
                f"account {account.name!r}: the instrument master just downloaded is quarantined ({reasons}) "
                f"and {why}: see `runner instruments sync {account.name}`"
            )
        snap = result.in_force
    elif snap.trading_day < today:
        log.warning(
            "instrument master of account %s is of %s, older than today's trading day %s: "
            "run `runner instruments sync %s`",
            account.name,
            snap.trading_day,
            today,
            account.name,
        )
    cached = _cache.get(snap.sha256)
    if cached is None:
        cached = _cache[snap.sha256] = load_snapshot(snap)
    _resolved[account.name] = snap.sha256
    return cached
