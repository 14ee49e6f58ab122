"""The cross-broker test (test_cross_broker.py's harness) with rolling instruments and LTP prices: a
nearest-weekly ATM call and an ATM-2 put, bought at LTP +2%, then the 15:15 square-off, on paper and on
each adapter against its simulator. Every venue resolves the contracts through its broker's
``instrument_master()`` (paper: the generated master of the day; each adapter: the same master, rendered
from the generator as CSV and served by its simulator) and the NIFTY index's LTP through the broker's
market-data API; all must pick the same contracts and report the same fills."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import test_cross_broker as cross

from runner.brokers.paper.master import generate_rows, generated_master, render_csv
from runner.brokers.paper.price_paths import StepPath, load_references, path_from_options
from runner.engine.rolling import resolve_spec
from runner.journal.resolved import ResolvedInstruments
from runner.journal.tables import RunStatus
from runner.model import Instrument
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

TEXT = """\
version: 1
name: cross-rolling
timezone: Asia/Kolkata
instruments:
  ce: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm, option_type: CE}
  pe: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm-2, option_type: PE}
limits: {max_lots_per_order: 4, allowed_exchanges: [NFO], allowed_instruments: [ce, pe]}
steps:
  - {kind: place, id: call, at: "09:20", instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "+2%"}}
  - {kind: place, id: put, instrument: pe, side: BUY, lots: 1, type: LIMIT, price: {ltp: "+2%"}}
  - {kind: square_off, id: flat, at: "15:15", verify_timeout: 30s}
"""
INDEX = Instrument("NSE", "NIFTY")
SPOT = Decimal("24512.35")


def playbook() -> Playbook:
    return Playbook.model_validate(load_yaml(TEXT).value)


def market(pb: Playbook) -> StepPath:
    """The default paper market (options priced off the reference NIFTY level), the index pinned."""
    path = StepPath(path_from_options({}, references=load_references()))
    path.set(INDEX, SPOT, cross.SLOT)
    return path


@contextlib.contextmanager
def shared_master(mp: pytest.MonkeyPatch, tmp: Path) -> Iterator[None]:
    """Every venue of the harness loads the generator's NIFTY master of the day (as CSV) and the market."""
    tmp.mkdir(parents=True, exist_ok=True)
    csv = tmp / "nifty-master.csv"
    # Tokens renumbered: the generator's run past 2**32, and ODIN's feed packs a token in 32 bits.
    rows = [
        dataclasses.replace(r, token=str(40000 + i))
        for i, r in enumerate(generate_rows(cross.DAY, ["NIFTY"]))
    ]
    csv.write_bytes(render_csv(rows))
    mp.setattr(cross, "MASTER", csv)
    mp.setattr(cross, "price_path", market)
    yield


async def expected() -> dict[str, str]:
    pb, master = playbook(), generated_master(cross.DAY)

    async def spot(ins: Instrument) -> Decimal:
        assert ins == INDEX
        return SPOT

    return {a: (await resolve_spec(pb, a, master, spot, cross.DAY))[0].key for a in ("ce", "pe")}


async def run_on(
    kind: str, mp: pytest.MonkeyPatch, tmp: Path
) -> tuple[cross.RunReport, dict[str, str], object]:
    pb = playbook()
    with shared_master(mp, tmp):
        async with cross.venue(kind, pb, mp, tmp) as v:
            report = await cross.run(v, pb, kind)
            contracts = {
                a: r.instrument.key
                for a, r in ResolvedInstruments(v.journal.engine).of_run(report.run_id).items()
            }
            return report, contracts, await cross.snapshot(v.broker)


async def test_paper_resolves_the_atm_weekly_contracts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report, contracts, after = await run_on("paper", monkeypatch, tmp_path)
    assert report.status is RunStatus.SUCCEEDED, [s.message for s in report.steps]
    want = await expected()
    assert contracts == want
    assert want["ce"].endswith(" 24500 CE") and want["pe"].endswith(" 24400 PE")  # ATM 24500 at 24512.35
    assert after.positions == {}  # type: ignore[attr-defined]
    assert {f[0] for f in after.fills} == set(want.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", cross.ADAPTERS)
async def test_rolling_ltp_priced_entry_matches_paper(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    got = await run_on(kind, monkeypatch, tmp_path / "b")
    ref = await run_on("paper", monkeypatch, tmp_path / "p")
    report, contracts, after = got
    assert report.status is RunStatus.SUCCEEDED, [s.message for s in report.steps]
    assert (
        cross.outcomes(report)
        == cross.outcomes(ref[0])
        == {"call": "succeeded", "put": "succeeded", "flat": "succeeded"}
    )
    assert contracts == ref[1] == await expected()
    assert after == ref[2]  # same fills (entry and exit prices), flat after the square-off
