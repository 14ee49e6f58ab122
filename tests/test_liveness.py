"""Holder liveness: same host by pid + start time, other hosts by heartbeat on the database's clock."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import sqlalchemy as sa

from runner.journal.db import make_engine
from runner.liveness import STALE_AFTER, ProcessIdentity, ProcessRegistry, local_alive, processes


def _registry(tmp_path) -> ProcessRegistry:  # type: ignore[no-untyped-def]
    return ProcessRegistry(make_engine(f"sqlite:///{tmp_path / 'j.db'}"))


def test_this_process_is_alive_and_round_trips_its_token() -> None:
    me = ProcessIdentity.current()
    assert ProcessIdentity.from_token(me.token) == me
    assert local_alive(me) is True


def test_an_exited_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = ProcessIdentity(ProcessIdentity.current().host, child.pid, "1")
    assert local_alive(gone) is False


def test_a_reused_pid_with_another_start_time_is_dead() -> None:
    me = ProcessIdentity.current()
    if not me.started:  # the platform cannot tell start times apart
        return
    impostor = ProcessIdentity(me.host, me.pid, str(int(me.started) + 1))
    assert local_alive(impostor) is False


def test_other_hosts_are_judged_by_heartbeat_on_the_database_clock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reg = _registry(tmp_path)
    peer = ProcessIdentity("elsewhere/abcd1234", 77, "123")
    assert local_alive(peer) is None
    assert reg.alive([peer.token]) == {peer.token: False}  # never registered
    reg.register(peer, "serve")
    assert reg.is_alive(peer.token)
    stale = reg.db_now() - dt.timedelta(seconds=STALE_AFTER + 1)
    with reg.engine.begin() as conn:
        conn.execute(processes.update().values(heartbeat_at=stale))
    assert not reg.is_alive(peer.token)
    reg.beat(peer)
    assert reg.is_alive(peer.token)
    reg.stop(peer)
    assert not reg.is_alive(peer.token)


def test_register_twice_keeps_one_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reg = _registry(tmp_path)
    me = ProcessIdentity.current()
    reg.register(me, "run")
    reg.register(me, "apply")
    with reg.engine.connect() as conn:
        assert conn.execute(sa.select(processes.c.command)).scalars().all() == ["apply"]


def test_a_killed_process_not_yet_reaped_is_dead() -> None:
    """A SIGKILLed `runner run` whose parent has not waited for it yet is a zombie: /proc still shows
    its pid and start time, but it holds nothing any more (found by the crash bench: a square-off waited
    60 s for a lease held by a zombie)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ident = ProcessIdentity(ProcessIdentity.current().host, child.pid, "")
        assert local_alive(ident) is True
        child.kill()
        for _ in range(200):  # the kill lands asynchronously; never reaped in this loop
            if local_alive(ident) is False:
                break
            time.sleep(0.01)
        assert local_alive(ident) is False
    finally:
        child.wait()
