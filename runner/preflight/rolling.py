"""``runner check``'s rolling-instruments row: every rolling alias of the due playbooks resolved now
against the broker's master and the underlying's last price, through the same rules a run uses
(:func:`runner.engine.rolling.resolve_spec`), so an ATM strike the run would refuse (no such expiry, an
LTP far outside the listed strikes) is a FAIL before the open, not a failed step at it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from runner.brokers.instruments import InstrumentMaster
from runner.engine.rolling import (
    InstrumentUnresolved,
    dependencies,
    resolve_spec,
    rolling_aliases,
    with_contracts,
)
from runner.engine.steps.common import StepError
from runner.errors import BrokerError
from runner.model import Instrument
from runner.playbook.models import Playbook
from runner.preflight.report import CheckName, Row, Status


class _NoPrice(Exception):
    """The underlying has no last price now: its ATM strike is known only when the step runs."""


async def rolling_rows(
    account: str, broker: Any, master: InstrumentMaster, due: Sequence[tuple[str, Playbook, dt.date]]
) -> list[Row]:
    """One row for the rolling aliases of ``due`` (label, playbook, trading day); none when there are none."""
    prices: dict[str, Decimal | None] = {}

    async def price_of(ins: Instrument) -> Decimal:
        if ins.key not in prices:  # one read per underlying, as a run reads it once
            read = getattr(broker, "ltp", None)
            try:
                prices[ins.key] = await read(ins) if read is not None else None
            except BrokerError:
                prices[ins.key] = None
        price = prices[ins.key]
        if price is None or price <= 0:
            raise _NoPrice(ins.key)
        return price

    resolved: list[str] = []
    failed: list[str] = []
    unknown: list[str] = []
    for label, pb, day in due:
        aliases = sorted(rolling_aliases(pb))
        for alias in dependencies(pb, aliases):
            if alias not in rolling_aliases(pb):
                continue
            try:
                ins, underlying, ltp = await resolve_spec(pb, alias, master, price_of, day)
            except _NoPrice as exc:
                unknown.append(f"{label}: {alias}: no last price of {exc} now; resolved when the step runs")
                continue
            except (InstrumentUnresolved, StepError) as exc:
                failed.append(f"{label}: {str(exc).removesuffix('; nothing was sent')}")
                continue
            pb = with_contracts(pb, {alias: ins})  # an alias naming it as underlying sees the contract
            at = f" ({underlying.key} LTP {ltp})" if underlying is not None else ""
            resolved.append(f"{label}: {alias} = {ins.key}{at}")
    if not (resolved or failed or unknown):
        return []
    details = failed + unknown + resolved
    if failed:
        return [Row(account, CheckName.ROLLING, Status.FAIL, f"{len(failed)} unresolved: {failed[0]}",
                    "the step would fail or be refused at run time: fix the playbook's instrument "
                    "or sync the master",
                    details)]
    status = Status.WARN if unknown else Status.OK
    reason = f"{len(resolved)} resolved now" + (f", {len(unknown)} without a price now" if unknown else "")
    return [Row(account, CheckName.ROLLING, status, reason, "", details)]


__all__ = ["rolling_rows"]
