"""Square-off scope: two strategies on one account each close only their own net (issue 11 §1)."""

from __future__ import annotations

from typing import Any

from helpers.engine import DAY, RELIANCE, at, make_env, playbook

from runner.engine.leases import LeaseMode, leases_for
from runner.journal.tables import RunStatus
from runner.liveness import ProcessIdentity, ProcessRegistry
from runner.model import OrderRequest, Product, Side
from runner.plan.model import CallOp, PlaybookSource
from runner.plan.planner import make_plan
from runner.plan.rehearse import rehearse


def entries(qty: int, *, tag: str | None = None, limit: bool = True) -> str:
    """A market buy of ``qty`` RELIANCE and (``limit``) a resting limit buy far below the market."""
    t = f", tag: {tag}" if tag else ""
    body = f"\n  - {{kind: place, id: e{qty}, instrument: rel, side: BUY, quantity: {qty}, product: MIS{t}}}"
    if limit:
        body += (
            f"\n  - {{kind: place, id: r{qty}, instrument: rel, side: BUY, quantity: 1, product: MIS,"
            f" type: LIMIT, price: 2500{t}}}"
        )
    return "steps:" + body + "\n"


def square_off(scope: str) -> str:
    return f"steps:\n  - {{kind: square_off, id: sq, scope: {scope}}}\n"


async def held(env: Any) -> int:
    return sum(p.quantity for p in await env.broker().positions() if p.instrument.key == RELIANCE.key)


async def open_tags(env: Any) -> list[str | None]:
    return sorted(o.tag or "" for o in await env.broker().open_orders())


async def test_two_playbooks_on_one_account_each_close_only_their_own_net(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10), "alpha"), slot=at(9, 15))).ok
    beta = await env.run(playbook(entries(4), "beta"), slot=at(9, 16))
    assert beta.ok
    assert await held(env) == 14
    env.clock.advance(60)
    report = await env.run(playbook(square_off("playbook"), "alpha"), slot=at(15, 15))
    msg = report.steps[0].message
    assert report.ok, msg
    assert await held(env) == 4  # beta's 4 stay
    assert "+10 closed, +4 left alone (playbook 'alpha''s net is +10)" in msg, msg
    assert "closed playbook 'alpha''s part" in msg, msg
    # only alpha's resting order was cancelled; beta's still works
    opens = await env.broker().open_orders()
    (beta_resting,) = [i for i in env.journal.intents(run_id=beta.run_id) if i.request.price is not None]
    assert [o.client_order_id for o in opens] == [beta_resting.client_order_id]
    # A second run of alpha's square-off counts the exits it placed: nothing left to close.
    again = await env.run(playbook(square_off("playbook"), "alpha"), slot=at(15, 16))
    assert again.ok and await held(env) == 4, again.steps[0].message
    assert "nothing to square off" in again.steps[0].message
    # beta closes its own 4 and the account is flat.
    report = await env.run(playbook(square_off("playbook"), "beta"), slot=at(15, 17))
    assert report.ok, report.steps[0].message
    assert await held(env) == 0 and await env.broker().open_orders() == []


async def test_two_tags_on_one_account_each_close_only_their_own_net(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10, tag="s1"), "entries"), slot=at(9, 15))).ok
    assert (await env.run(playbook(entries(4, tag="s2"), "entries2"), slot=at(9, 16))).ok
    env.clock.advance(60)
    report = await env.run(playbook(square_off("{tag: s1}"), "eod"), slot=at(15, 15))
    assert report.ok, report.steps[0].message
    assert await held(env) == 4
    assert await open_tags(env) == ["s2"]  # s1's resting order cancelled, s2's left working
    exits = [i for i in env.journal.intents(run_id=report.run_id) if i.step_id == "sq"]
    assert [(i.request.side, i.request.quantity, i.request.tag) for i in exits] == [(Side.SELL, 10, "s1")]
    # The exits carry the tag: another s1 square-off (any playbook) finds nothing to close.
    again = await env.run(playbook(square_off("{tag: s1}"), "eod2"), slot=at(15, 16))
    assert again.ok and await held(env) == 4
    assert "nothing to square off" in again.steps[0].message, again.steps[0].message
    report = await env.run(playbook(square_off("{tag: s2}"), "eod"), slot=at(15, 17))
    assert report.ok and await held(env) == 0, report.steps[0].message


async def _foreign(env: Any, side: Side, qty: int) -> None:
    """An order placed outside the runner (never journaled): part of the broker net, of no scope."""
    await env.broker().place(OrderRequest("manual", RELIANCE, side, qty, product=Product.MIS))
    env.clock.advance(1)


async def test_a_broker_net_smaller_than_the_scopes_caps_it(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10, limit=False), "alpha"), slot=at(9, 15))).ok
    await _foreign(env, Side.SELL, 6)  # broker net +4, alpha's +10
    report = await env.run(playbook(square_off("playbook"), "alpha"), slot=at(15, 15))
    msg = report.steps[0].message
    assert report.ok, msg
    assert await held(env) == 0  # closed 4, never flipped to -6
    assert "playbook 'alpha''s net +10 capped by the broker's" in msg, msg
    exits = [i for i in env.journal.intents(run_id=report.run_id) if i.step_id == "sq"]
    assert [(i.request.side, i.request.quantity) for i in exits] == [(Side.SELL, 4)]


async def test_an_opposite_broker_net_leaves_nothing_to_close(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10, limit=False), "alpha"), slot=at(9, 15))).ok
    await _foreign(env, Side.SELL, 15)  # broker net -5, alpha's +10
    report = await env.run(playbook(square_off("playbook"), "alpha"), slot=at(15, 15))
    msg = report.steps[0].message
    assert report.ok, msg
    assert await held(env) == -5
    assert "left alone (playbook 'alpha''s net is +10, the other way)" in msg, msg
    assert "nothing to square off" in msg
    assert [i for i in env.journal.intents(run_id=report.run_id) if i.step_id == "sq"] == []


async def test_account_scope_is_the_default_and_closes_everything(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10), "alpha"), slot=at(9, 15))).ok
    assert (await env.run(playbook(entries(4), "beta"), slot=at(9, 16))).ok
    report = await env.run(playbook("steps:\n  - {kind: square_off, id: sq}\n", "alpha"), slot=at(15, 15))
    assert report.ok and await held(env) == 0 and await env.broker().open_orders() == []


async def test_plan_shows_what_a_scoped_square_off_touches_and_leaves_alone(tmp_path):
    env = make_env(tmp_path)
    assert (await env.run(playbook(entries(10, tag="s1"), "alpha"), slot=at(9, 15))).ok
    assert (await env.run(playbook(entries(4, tag="s2"), "beta"), slot=at(9, 16))).ok
    pb = playbook(square_off("{tag: s1}"), "eod")
    plan = await make_plan(
        pb,
        PlaybookSource("pb.yaml", pb.model_dump_json()),
        env.broker(),
        env.journal,
        account=env.account,
        now=env.clock.now(),
        scheduled_for=at(15, 15),
    )
    (step,) = plan.steps
    cancels = [c for c in step.calls if c.op is CallOp.CANCEL]
    (s1_resting,) = [o for o in await env.broker().open_orders() if o.tag == "s1"]
    assert [c.client_order_id for c in cancels] == [s1_resting.client_order_id]
    (exit_,) = [c for c in step.calls if c.op is CallOp.PLACE]
    assert (exit_.side, exit_.quantity) == (Side.SELL, 10)
    assert "+10 closed, +4 left alone (tag 's1''s net is +10)" in step.message, step.message
    assert "of tag 's1'" in cancels[0].reason
    assert {p["instrument"]: (p["before"], p["after"]) for p in plan.positions} == {RELIANCE.key: (14, 4)}
    assert await held(env) == 14  # a plan sends nothing


async def test_rehearse_runs_a_playbook_scoped_square_off(tmp_path):
    pb = playbook(
        """
steps:
  - {kind: place, id: e, instrument: rel, side: BUY, quantity: 10, product: MIS, at: "09:20"}
  - {kind: square_off, id: sq, scope: playbook, at: "15:15"}
""",
        "alpha",
    )
    report = await rehearse(pb, DAY, db_url=f"sqlite:///{tmp_path / 'r.db'}")
    assert report.ok, [s.message for s in report.steps]
    assert "flat" in report.steps[-1].message or "part" in report.steps[-1].message


# --- busy wait from the playbook ---------------------------------------------------------------------

PEER = ProcessIdentity("elsewhere/abcd1234", 77, "123")
PLACE_BUSY = """
account_busy: {wait: 0s}
steps:
  - {kind: place, id: e, instrument: rel, side: BUY, quantity: 5, product: MIS}
"""


def _peer_holds(env: Any) -> None:
    ProcessRegistry(env.engine).register(PEER, "serve")
    got = leases_for(env.engine).try_acquire(
        env.account, "20260302-094500-peerrun1", LeaseMode.EXCLUSIVE, "sq", holder=PEER.token
    )
    assert not isinstance(got, list)


async def test_the_playbooks_account_busy_wait_is_honoured(tmp_path):
    env = make_env(tmp_path)
    _peer_holds(env)
    start = env.clock.now()
    report = await env.run(playbook(PLACE_BUSY))  # no busy_wait option: the playbook's 0s
    assert report.status is RunStatus.REFUSED
    assert "is busy: held by run 20260302-094500-peerrun1" in report.steps[0].message
    assert env.clock.now() == start  # refused at once, not after the default 60 s
    assert await env.broker().orders() == []


async def test_the_cli_busy_wait_overrides_the_playbooks(tmp_path):
    env = make_env(tmp_path)
    _peer_holds(env)
    report = await env.run(playbook(PLACE_BUSY), busy_wait=3.0)
    assert report.status is RunStatus.REFUSED
    assert "busy after waiting 3s" in report.steps[0].message, report.steps[0].message


def test_playbook_busy_wait_resolution():
    pb = playbook(PLACE_BUSY)
    assert pb.busy_wait(None, 60.0) == 0.0
    assert pb.busy_wait(7.0, 60.0) == 7.0
    assert playbook("steps:\n  - {kind: square_off, id: sq}\n").busy_wait(None, 60.0) == 60.0
