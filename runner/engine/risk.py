"""Pre-trade risk checks: the playbook's ``limits`` plus a global config, checked before anything is sent.

The global config is YAML named by ``$RUNNER_RISK`` (or ``--risk FILE``), e.g.::

    max_quantity_per_order: 3600
    max_notional: 5000000        # rupees per order
    max_orders_per_run: 200
    allowed_exchanges: [NSE, NFO]

The stricter of the two limits applies. Orders that only reduce risk (square-off, unwind) are never
blocked by limits: refusing an exit would leave the position open, which is the larger risk.
A MARKET order's notional uses a price reference (:meth:`runner.engine.calls.BrokerCalls.reference_prices`):
the broker's quote (``MarketData.quotes``) or last price (:class:`QuoteSource`), else the last price this
process saw for the instrument, none older than ``Tuning.max_quote_age``; with none fresh enough, an order
under a notional limit is refused rather than priced from a stale or guessed value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from runner.model import Instrument, OrderRequest, OrderType
from runner.playbook.models import Limits, Playbook

ENV_VAR = "RUNNER_RISK"


class RiskRefused(Exception):
    """A pre-trade limit said no. Nothing was sent."""


@runtime_checkable
class QuoteSource(Protocol):
    """Optional broker capability: a last traded price for an instrument (an adapter with market data
    answers it as ``quotes([instrument])``'s ltp; the gateway asks ``quotes`` first, for the price's time)."""

    async def ltp(self, instrument: Instrument) -> Decimal | None: ...


class RiskConfig(BaseModel):
    """Global limits, applied to every playbook on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_quantity_per_order: Annotated[int, Field(gt=0)] | None = None
    max_lots_per_order: Annotated[int, Field(gt=0)] | None = None
    max_notional: Annotated[Decimal, Field(gt=0)] | None = None
    max_orders_per_run: Annotated[int, Field(gt=0)] | None = None
    allowed_exchanges: list[str] | None = None
    allowed_instruments: list[str] | None = None  # instrument keys, e.g. "NFO NIFTY 2026-12-29 24500 CE"


def load_risk_config(path: str | os.PathLike[str] | None = None) -> RiskConfig:
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return RiskConfig()
    from runner.playbook.yamlload import load_yaml, read_text

    p = Path(path)
    doc = load_yaml(read_text(p), filename=str(p)).value
    return RiskConfig.model_validate(doc or {})


def _min(*values: int | Decimal | None) -> int | Decimal | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class RiskChecker:
    def __init__(self, playbook: Playbook, config: RiskConfig | None = None) -> None:
        self.config = config or RiskConfig()
        limits: Limits = playbook.limits
        self.max_qty = _min(limits.max_quantity_per_order, self.config.max_quantity_per_order)
        self.max_lots = _min(limits.max_lots_per_order, self.config.max_lots_per_order)
        self.max_notional = _min(limits.max_notional, self.config.max_notional)
        self.max_orders = _min(limits.max_orders_per_run, self.config.max_orders_per_run)
        # A rolling alias is added by allow_instrument once resolved (runner.engine.rolling).
        self.playbook_instruments: set[str] | None = (
            {
                playbook.instrument(ref).key
                for ref in limits.allowed_instruments
                if not (isinstance(ref, str) and playbook.instruments[ref].is_rolling)
            }
            if limits.allowed_instruments is not None
            else None
        )
        self.global_instruments = (
            set(self.config.allowed_instruments) if self.config.allowed_instruments is not None else None
        )
        self.exchange_lists: list[Sequence[str]] = [
            x for x in (limits.allowed_exchanges, self.config.allowed_exchanges) if x is not None
        ]

    def allow_instrument(self, key: str) -> None:
        """A rolling alias of ``allowed_instruments`` resolved to contract ``key`` for this run."""
        if self.playbook_instruments is not None:
            self.playbook_instruments.add(key)

    @property
    def needs_price(self) -> bool:
        return self.max_notional is not None

    def check(self, request: OrderRequest, *, orders_so_far: int, reference_price: Decimal | None) -> None:
        """Raise :class:`RiskRefused` with a message saying which limit and by how much."""
        ins = request.instrument
        what = f"{request.side.value} {request.quantity} {ins.key}"
        for allowed in self.exchange_lists:
            if ins.exchange not in allowed:
                raise RiskRefused(f"{what}: exchange {ins.exchange} not in allowed_exchanges {list(allowed)}")
        for allowed_keys, source in (
            (self.playbook_instruments, "limits"),
            (self.global_instruments, "global"),
        ):
            if allowed_keys is not None and ins.key not in allowed_keys:
                raise RiskRefused(f"{what}: instrument not in {source} allowed_instruments")
        if self.max_qty is not None and request.quantity > self.max_qty:
            raise RiskRefused(
                f"{what}: quantity {request.quantity} exceeds max_quantity_per_order {self.max_qty}"
            )
        if self.max_lots is not None:
            if not ins.lot_size:
                raise RiskRefused(f"{what}: max_lots_per_order is set but the lot size is unknown")
            lots = Decimal(request.quantity) / ins.lot_size
            if lots > self.max_lots:
                raise RiskRefused(f"{what}: {lots} lots exceeds max_lots_per_order {self.max_lots}")
        if self.max_orders is not None and orders_so_far + 1 > self.max_orders:
            raise RiskRefused(
                f"{what}: would be order {orders_so_far + 1} of this run, max_orders_per_run "
                f"is {self.max_orders}"
            )
        if self.max_notional is not None:
            price = self._price_for_notional(request, reference_price)
            if price is None:
                raise RiskRefused(
                    f"{what}: max_notional is set but no price reference is available for a "
                    f"{request.order_type.value} order"
                )
            notional = price * request.quantity
            if notional > self.max_notional:
                raise RiskRefused(
                    f"{what}: notional {notional} at {price} exceeds max_notional {self.max_notional}"
                )

    @staticmethod
    def _price_for_notional(request: OrderRequest, reference: Decimal | None) -> Decimal | None:
        if request.order_type in (OrderType.LIMIT, OrderType.SL):
            assert request.price is not None
            # A marketable limit can fill better, never worse than its price: price bounds the notional.
            return request.price
        if request.order_type is OrderType.SL_M and request.trigger_price is not None:
            return max(request.trigger_price, reference) if reference is not None else request.trigger_price
        return reference
