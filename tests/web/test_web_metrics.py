"""``/metrics`` parsed with prometheus_client's own text parser; the status JSON equals the API's."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import aiohttp
from helpers.web import get, serving, wait_for
from prometheus_client.parser import text_string_to_metric_families

from runner.commands.status import collect
from runner.engine.killswitch import ControlStore, Mode
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore
from runner.observability import hooks
from runner.observability.metrics import Metrics
from runner.web.server import build_app, start


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def test_metrics_of_a_serving_daemon(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        store = FireStore(s.engine, "t")
        wait_for("a fire", lambda: any(r.state is FireState.SUCCEEDED for r in store.history()))
        status, text, headers = get(s.url + "metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        m = families(text)
        daemon = json.loads(get(s.url + "api/status")[1])["daemons"][0]["daemon_id"]
        fires = {lab["state"]: v for _, lab, v in m["runner_fires"]}
        assert fires["succeeded"] >= 1 and set(fires) == {st.value for st in FireState}
        assert all(lab["daemon"] == daemon for samples in m.values() for _, lab, _ in samples)
        assert [v for _, _, v in m["runner_halted"]] == [0]
        orders = [(lab["broker"], lab["status"]) for _, lab, _ in m["runner_orders"]]
        assert ("paper", "filled") in orders
        # process histograms: fire lateness and broker latency by broker and operation
        late = {n: v for n, _, v in m["runner_fire_lateness_seconds"]}
        assert late["runner_fire_lateness_seconds_count"] >= 1
        ops = {
            lab["operation"]
            for n, lab, _ in m["runner_broker_request_seconds"]
            if lab.get("broker") == "paper"
        }
        assert "place" in ops
        beats = [
            v for _, lab, v in m["runner_daemon_last_heartbeat_timestamp_seconds"] if lab["peer"] == daemon
        ]
        assert beats and abs(beats[0] - dt.datetime.now(dt.UTC).timestamp()) < 60
        assert "runner_master_snapshot_age_seconds" not in m  # nothing synced yet: no made-up value


HOUR = dt.timedelta(hours=1)


def test_journal_collector_halt_master_age_and_alert_hook(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    ControlStore(engine).set(Mode.REDUCE_ONLY, "test", "pytest", now)
    from runner.instruments.index import master_snapshots as snaps

    good = {"broker": "kotak_neo", "trading_day": dt.date(2026, 12, 1), "row_count": 1, "path": "p"}
    with engine.begin() as conn:  # acct's newest good snapshot is an hour old; a quarantined one is ignored
        conn.execute(snaps.insert(), [
            {**good, "account": "acct", "sha256": "a", "status": "good", "created_at": now - 3 * HOUR},
            {**good, "account": "acct", "sha256": "b", "status": "good", "created_at": now - HOUR},
            {**good, "account": "acct", "sha256": "c", "status": "quarantined", "created_at": now},
        ])
    metrics = Metrics(engine, "d1", {"acct": "kotak_neo"}, clock=lambda: now)
    try:
        hooks.alert_delivery("ops-telegram", False)
        hooks.broker_call("kotak_neo", "place", 0.004, None)
        m = families(metrics.render().decode())
    finally:
        metrics.close()
    hooks.alert_delivery("ops-telegram", False)  # unsubscribed: no longer counted, and no error
    assert [v for _, _, v in m["runner_halted"]] == [1]
    modes = {lab["mode"]: v for _, lab, v in m["runner_control_mode"]}
    assert modes == {"normal": 0, "halt": 0, "reduce_only": 1}
    assert [v for _, _, v in m["runner_master_snapshot_age_seconds"]] == [3600]
    alerts = {
        (lab["target"], lab["result"]): v
        for n, lab, v in m["runner_alert_deliveries"]
        if n.endswith("_total")
    }
    assert alerts == {("ops-telegram", "failed"): 1}
    assert any(lab.get("operation") == "place" for _, lab, _ in m["runner_broker_request_seconds"])


def test_a_failing_metrics_sink_never_reaches_the_caller() -> None:
    class Broken:
        def broker_call(self, *a: object) -> None:
            raise RuntimeError("metrics bug")

        fire_started = alert_delivery = broker_call

    undo = hooks.subscribe(Broken())
    try:
        hooks.broker_call("paper", "place", 0.1)
        hooks.fire_started("p", 0.001)
        hooks.alert_delivery("t", True)
    finally:
        undo()


async def test_status_json_equals_the_api(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        store = FireStore(s.engine, "t")
        wait_for("a fire", lambda: any(r.state is FireState.SUCCEEDED for r in store.history()))
        s.proc.terminate()
        s.proc.communicate(timeout=30)
        db_url, engine = s.db_url, s.engine
    now = dt.datetime.now(dt.UTC)
    expected = json.loads(json.dumps(collect(db_url, now), default=str))  # what `runner status --json` prints
    for key in (
        "now",
        "dead_runs",
        "control",
        "halt_cancels",
        "daemons",
        "next_fires",
        "running",
        "last_outcomes",
    ):
        assert key in expected  # the keys scripts already read
    assert expected["recent_runs"] and expected["last_outcomes"]
    runner, port = await start(build_app(engine, daemon="d", now=lambda: now), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/status") as r:
            assert r.status == 200
            served = await r.json()
    finally:
        await runner.cleanup()
    assert served == expected
