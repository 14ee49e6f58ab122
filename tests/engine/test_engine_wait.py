"""wait steps and step timing (at / after / late) on the virtual clock."""

from __future__ import annotations

from helpers.engine import at, make_env, playbook
from helpers.faulty_broker import FaultyNoMultileg

from runner.journal.tables import StepOutcome


async def test_wait_until_a_time_moves_the_clock_there(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - {kind: wait, id: w, until: "15:10"}
""")
    )
    assert env.steps(report) == {"w": "succeeded"}
    assert env.clock.now() == at(15, 10)


async def test_wait_for_order_status_succeeds_when_reached(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - {kind: place, id: buy, instrument: fut, side: BUY, lots: 1}
  - {kind: wait, id: w, order: buy, status: [filled], timeout: 10s}
""")
    )
    assert env.steps(report) == {"buy": "succeeded", "w": "succeeded"}


async def test_wait_timeout_policies(tmp_path):
    body = """
steps:
  - {{kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 20000}}
  - {{kind: wait, id: w, order: bid, status: [filled], timeout: 30s, on_timeout: {policy}}}
  - {{kind: place, id: next, instrument: fut, side: BUY, lots: 1}}
  - {{kind: cancel, id: tidy, all_open: {{}}}}
"""
    expected = {
        "fail": ("failed", "skipped", "failed"),
        "continue": ("timed_out", "succeeded", "succeeded"),
        "stop": ("stopped", "skipped", "stopped"),
    }
    for policy, (w, nxt, run_status) in expected.items():
        env = make_env(tmp_path / policy)
        start = env.clock.now()
        report = await env.run(playbook(body.format(policy=policy), name=f"w{policy}"))
        steps = env.steps(report)
        assert (steps["w"], steps["next"], report.status.value) == (w, nxt, run_status), policy
        assert steps["tidy"] == "succeeded"  # exits still run after a failure
        assert (env.clock.now() - start).total_seconds() >= 30


async def test_at_waits_and_after_delays(tmp_path):
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - {kind: wait, id: a, at: "10:00"}
  - {kind: wait, id: b, after: 90s}
""")
    )
    assert env.steps(report) == {"a": "succeeded", "b": "succeeded"}
    assert report.steps[0].finished_at == at(10, 0)
    assert report.steps[1].finished_at == at(10, 1, 30)


async def test_late_step_is_skipped_or_run_within_window(tmp_path):
    env = make_env(tmp_path, start=at(10, 3))
    report = await env.run(
        playbook("""
steps:
  - {kind: wait, id: skipme, at: "10:00"}
  - {kind: wait, id: within, at: "10:00", late: run-within 5m}
  - {kind: wait, id: toolate, at: "09:00", late: run-within 5m}
""")
    )
    assert env.steps(report) == {"skipme": "skipped", "within": "succeeded", "toolate": "skipped"}
    assert "late by 180s" in report.steps[0].message


async def test_now_mode_ignores_at(tmp_path):
    env = make_env(tmp_path, start=at(9, 30))
    report = await env.run(
        playbook("""
steps:
  - {kind: wait, id: a, at: "14:00"}
"""),
        ignore_at=True,
    )
    assert report.steps[0].outcome is StepOutcome.SUCCEEDED
    assert env.clock.now() == at(9, 30)


async def test_wait_on_several_orders_shares_one_deadline(tmp_path):
    """A spread reference is two orders: the limit is the timeout, not one timeout per order."""
    env = make_env(tmp_path)
    report = await env.run(
        playbook("""
steps:
  - kind: spread
    id: sp
    legs:
      - {id: a, instrument: ce, side: SELL, lots: 1}
      - {id: b, instrument: pe, side: BUY, lots: 1, role: hedge}
  - {kind: wait, id: w, order: sp, status: [cancelled], timeout: 30s, on_timeout: continue}
"""),
        broker=FaultyNoMultileg(env.broker()),
    )
    assert env.steps(report) == {"sp": "succeeded", "w": "timed_out"}, report.steps[-1].message
    waited = report.steps[1].finished_at - report.steps[1].started_at
    assert 30 <= waited.total_seconds() < 60
