"""A live session the broker ended (Kotak Neo's "invalid session", Blitz's expired JWT, ODIN's 401,
AlphaPoint's "Not Authorized") is the typed :class:`SessionExpired` on every adapter, over each
simulator with sessions that expire after an hour: a read logs in again and goes on, an order request
surfaces it (never re-sent by the adapter) and the engine's call path logs in and retries it, journaled;
each expiry publishes the ``session_expired`` alert."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from helpers.alerts_capture import Capture
from helpers.relogin import ADAPTERS, T0

from runner.alerts.delivery import Dispatcher
from runner.clock import VirtualClock
from runner.engine.calls import BrokerCalls
from runner.errors import SessionExpired
from runner.journal.store import Journal
from runner.model import OrderStatus


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def _expiry_alerts(capture: Capture) -> list[str]:
    return [p["message"] for p in capture.posts if "session_expired" in p["title"]]


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_an_order_on_an_expired_session_is_a_typed_session_expiry(
    kind: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ADAPTERS[kind](clock, monkeypatch) as s:
        await s.broker.connect()
        clock.advance(4000)  # past the simulator's one-hour session
        with pytest.raises(SessionExpired):
            await s.broker.place(s.order("rnexpiry1"))


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_a_read_on_an_expired_session_logs_in_again_and_alerts(
    kind: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, capture: Capture, dispatcher: Dispatcher
) -> None:
    async with ADAPTERS[kind](clock, monkeypatch) as s:
        await s.broker.connect()
        await s.broker.orders()
        assert s.logins() == 1 and dispatcher.flush() and _expiry_alerts(capture) == []
        clock.advance(4000)
        await s.broker.orders()  # answered on a new session
        assert s.logins() == 2
        assert dispatcher.flush()
        (alert,) = _expiry_alerts(capture)
        assert s.broker.account.name in alert and "expired" in alert


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_the_engine_logs_in_again_and_journals_the_expiry_before_retrying_an_order(
    kind: str,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    capture: Capture,
    dispatcher: Dispatcher,
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    async with ADAPTERS[kind](clock, monkeypatch) as s:
        await s.broker.connect()
        clock.advance(4000)
        calls = BrokerCalls(s.broker, journal, clock, "RUN-1", s.broker.account.name)
        request = s.order("rnexpiry2")
        placed, _row = await calls.call("place", lambda: s.broker.place(request), cid=request.client_order_id)
        assert placed.status in (OrderStatus.PENDING_NEW, OrderStatus.OPEN) and s.logins() == 2
        with journal.engine.connect() as conn:
            events = conn.execute(sa.text("SELECT level, message FROM events WHERE run_id = 'RUN-1'")).all()
            errors = conn.execute(sa.text("SELECT error FROM broker_calls WHERE run_id = 'RUN-1'")).scalars()
            assert list(errors) == ["SessionExpired", None]  # the refused attempt, then the retry
        assert [(lvl, "session expired" in msg) for lvl, msg in events] == [("warning", True)]
        assert dispatcher.flush() and len(_expiry_alerts(capture)) == 1
