"""Typed model of a playbook (language v1). ``schemas/playbook.v1.json`` is the published source of truth;
``tests/playbook/test_schema_drift.py`` keeps these models and the schema from drifting apart.

The validator (:mod:`runner.playbook.validate`) checks the raw YAML against the JSON Schema first (for precise
``file:line:col`` errors), then builds these models and runs the semantic checks. The engine and the
scheduler only ever see these models.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from runner.model import Instrument, OptionType, OrderStatus, OrderType, Product, Side, Validity
from runner.playbook.durations import DURATION_RE
from runner.playbook.durations import parse_duration as parse_duration  # the one parser, re-exported
from runner.playbook.ltp_offsets import OFFSET_PATTERN, Offset, parse_offset
from runner.playbook.rolling import ATM_PATTERN, ExpiryKind, parse_atm

# --- scalar syntaxes -------------------------------------------------------------------------------

TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
LATE_RE = re.compile(r"^(skip|run-within \S+)$")
VAR_RE = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s*\*\s*([A-Za-z_][A-Za-z0-9_]*|\d+))?\s*\}$")


def parse_time(text: str) -> dt.time:
    m = TIME_RE.match(str(text))
    if not m:
        raise ValueError(f"invalid time {text!r}: write local 24h time as HH:MM or HH:MM:SS, quoted")
    return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))


Duration = Annotated[str, Field(pattern=DURATION_RE.pattern.replace("^", "^(?:\\d+|").replace("$", ")$"))]
LocalTime = Annotated[str, Field(pattern=TIME_RE.pattern)]
Late = Annotated[str, Field(pattern=LATE_RE.pattern)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
# An earlier step's id, or ``spread_id.leg_id`` for one leg of a spread.
OrderRef = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}(\.[A-Za-z][A-Za-z0-9_-]{0,63})?$")]
Exchange = Literal["NSE", "BSE", "NFO", "BFO", "MCX", "CDS"]
# A quantity or price may be a literal or a ``${var}`` / ``${var * var}`` substitution.
VarRef = Annotated[str, Field(pattern=VAR_RE.pattern)]
Qty = Annotated[int, Field(gt=0)] | VarRef


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class LtpPrice(_Model):
    """A price relative to the last traded price, resolved when the step runs: ``{ltp: "-1%"}``."""

    ltp: Annotated[str, Field(pattern=OFFSET_PATTERN)] | Annotated[int, Field(ge=0, le=0)]

    @property
    def offset(self) -> Offset:
        return parse_offset(self.ltp)


# A price is a literal, a ``${var}`` substitution, or market-relative ``{ltp: "<offset>"}``.
Price = Annotated[Decimal, Field(gt=0)] | VarRef | LtpPrice


# --- instruments ------------------------------------------------------------------------------------


class RollingExpiry(_Model):
    """A relative expiry (``{nearest: weekly}``, ``{nearest: monthly, offset: 1}``), resolved when the step
    runs by :func:`runner.playbook.rolling.pick_expiry`."""

    nearest: ExpiryKind
    offset: Annotated[int, Field(ge=0, le=12)] = 0


class Underlying(_Model):
    """The instrument whose LTP sets an ATM strike, when it is not an alias."""

    exchange: Exchange
    symbol: Annotated[str, Field(min_length=1, max_length=40)]


AtmStrike = Annotated[str, Field(pattern=ATM_PATTERN)]


class InstrumentSpec(_Model):
    """Broker-neutral instrument: exchange + symbol, plus expiry/strike/option_type for derivatives. A
    relative expiry or an ``atm`` strike makes it *rolling*: resolved to a concrete contract when the run's
    first step using it runs (:mod:`runner.engine.rolling`)."""

    exchange: Exchange
    symbol: Annotated[str, Field(min_length=1, max_length=40)]
    expiry: dt.date | RollingExpiry | None = None
    strike: Annotated[Decimal, Field(gt=0)] | AtmStrike | None = None
    option_type: OptionType | None = None
    underlying: Identifier | Underlying | None = None  # whose LTP sets an ``atm`` strike
    lot_size: Annotated[int, Field(gt=0)] | None = None
    tick_size: Annotated[Decimal, Field(gt=0)] | None = None
    freeze_quantity: Annotated[int, Field(gt=0)] | None = None
    price_multiplier: Annotated[Decimal, Field(gt=0)] | None = None  # P&L: money per price point per unit

    @property
    def is_rolling(self) -> bool:
        return isinstance(self.expiry, RollingExpiry) or isinstance(self.strike, str)

    @property
    def atm_steps(self) -> int | None:
        """N of ``atm+N`` (0 for ``atm``); None for a fixed strike."""
        return parse_atm(self.strike) if isinstance(self.strike, str) else None

    def rule(self) -> str:
        """The rolling rule as a person reads it: ``NFO NIFTY nearest weekly atm+1 CE``."""
        parts = [self.exchange, self.symbol]
        if isinstance(self.expiry, RollingExpiry):
            offset = f"+{self.expiry.offset}" if self.expiry.offset else ""
            parts.append(f"nearest {self.expiry.nearest.value}{offset}")
        elif self.expiry is not None:
            parts.append(self.expiry.isoformat())
        if self.strike is not None:
            strike = self.strike
            parts.append(strike if isinstance(strike, str) else format(strike.normalize(), "f"))
        if self.option_type is not None:
            parts.append(self.option_type.value)
        return " ".join(parts)

    def to_instrument(self) -> Instrument:
        if self.is_rolling:
            raise ValueError(
                f"{self.rule()} is a rolling instrument: its contract is resolved when the step runs"
            )
        assert not isinstance(self.expiry, RollingExpiry) and not isinstance(self.strike, str)
        return Instrument(
            exchange=self.exchange,
            symbol=self.symbol,
            expiry=self.expiry,
            strike=self.strike,
            option_type=self.option_type,
            lot_size=self.lot_size,
            tick_size=self.tick_size,
            freeze_quantity=self.freeze_quantity,
            price_multiplier=self.price_multiplier,
        )


InstrumentRef = Identifier | InstrumentSpec  # an alias from ``instruments:`` or an inline spec


# --- schedule & timing ------------------------------------------------------------------------------


class Schedule(_Model):
    """Exactly one of ``daily``, ``cron``, ``every`` or ``once``."""

    daily: LocalTime | None = None
    cron: str | None = None  # 5 fields, in the playbook's timezone
    every: Duration | None = None
    between: tuple[LocalTime, LocalTime] | None = None  # window for ``every``
    once: dt.datetime | None = None  # a one-off fire; naive means the playbook's timezone
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None  # for ``daily``
    late: Late = "skip"  # misfire policy for the whole fire


class Timing(_Model):
    at: LocalTime | None = None  # wait until this local time
    after: Duration | None = None  # then wait this long after the previous step finished
    late: Late | None = None  # if the step is reached after ``at``: skip, or run if within the window


# --- steps ------------------------------------------------------------------------------------------


class OrderFields(_Model):
    instrument: InstrumentRef
    side: Side
    quantity: Qty | None = None
    lots: Qty | None = None  # quantity = lots × the instrument's lot size
    type: OrderType = OrderType.MARKET
    price: Price | None = None
    trigger_price: Price | None = None
    product: Product = Product.MIS
    validity: Validity = Validity.DAY
    disclosed_quantity: Annotated[int, Field(ge=0)] = 0
    tag: Annotated[str, Field(max_length=20)] | None = None


class PlaceStep(Timing, OrderFields):
    kind: Literal["place"]
    id: Identifier
    description: str | None = None


class SpreadLeg(OrderFields):
    id: Identifier | None = None
    role: Literal["hedge", "main"] = "main"


class SpreadStep(Timing):
    kind: Literal["spread"]
    id: Identifier
    description: str | None = None
    mode: Literal["native", "legged", "auto"] = "auto"
    legs: Annotated[list[SpreadLeg], Field(min_length=2, max_length=4)]
    leg_order: Literal["hedge_first", "declared"] = "hedge_first"
    leg_timeout: Duration = "10s"
    on_leg_failure: Literal["unwind", "cancel_pending", "keep"] = "unwind"


class OrderCondition(_Model):
    """Conditions on an earlier order; all given must hold."""

    status: list[OrderStatus] | None = None
    unfilled: bool | None = None  # no quantity filled yet
    older_than: Duration | None = None  # age since the order was placed


class Chase(_Model):
    """Step the price towards the market: ``tick`` rupees (or ``ticks`` × the tick size) per ``every``, at
    most ``max`` times."""

    tick: Annotated[Decimal, Field(gt=0)] | None = None
    ticks: Annotated[int, Field(ge=1, le=1000)] | None = None
    every: Duration
    max: Annotated[int, Field(ge=1, le=100)]
    limit_price: Price | None = None  # never chase beyond this price
    then_market: bool = False  # convert to MARKET after the last step if still unfilled

    @model_validator(mode="after")
    def _one_step(self) -> Chase:
        if (self.tick is None) == (self.ticks is None):
            raise ValueError("a chase needs exactly one of 'tick' (rupees) or 'ticks' (a count of ticks)")
        return self

    def step_size(self, tick_size: Decimal | None) -> Decimal:
        """The price step in rupees: ``tick``, or ``ticks`` × the instrument's tick size (ValueError when
        that is unknown)."""
        if self.tick is not None:
            return self.tick
        assert self.ticks is not None
        if not tick_size:
            raise ValueError(
                f"chase ticks: {self.ticks} needs the instrument's tick size (from the master or tick_size)"
            )
        return self.ticks * tick_size


class ModifyStep(Timing):
    kind: Literal["modify"]
    id: Identifier
    description: str | None = None
    order: OrderRef  # a place step id, or ``spread_id.leg_id``
    when: OrderCondition = Field(default_factory=lambda: OrderCondition(status=[OrderStatus.OPEN]))
    price: Price | None = None
    trigger_price: Price | None = None
    quantity: Qty | None = None
    chase: Chase | None = None
    to_market: bool = False


class OrderFilter(_Model):
    """Matches orders or positions. Omitted fields match anything."""

    exchange: list[Exchange] | None = None
    product: list[Product] | None = None
    side: Side | None = None
    instruments: list[InstrumentRef] | None = None
    tag: str | None = None
    this_run_only: bool = False  # only orders (and the net position) this run of the playbook placed


class CancelStep(Timing):
    kind: Literal["cancel"]
    id: Identifier
    description: str | None = None
    order: OrderRef | None = None  # one earlier order (or a whole spread) ...
    all_open: OrderFilter | None = None  # ... or every open order matching a filter
    when: OrderCondition | None = None


class NoPrice(enum.StrEnum):
    """What a limit-first square-off does for a position with no fresh price to set its limit from."""

    MARKET = "market"  # close it at market straight away (said in the step message and a warning note)
    FAIL = "fail"  # send nothing for it; the step fails naming it (the other positions are still closed)


class Escalation(_Model):
    limit_offset: Annotated[Decimal, Field(ge=0)] = Decimal("0")  # price offset from LTP, in rupees
    timeout: Duration = "15s"  # then go to market
    then_market: bool = True
    no_price: NoPrice = NoPrice.MARKET


class TagScope(_Model):
    """A square-off scope: the account's orders carrying this tag (one strategy's trades)."""

    tag: Annotated[str, Field(min_length=1, max_length=20)]


class SquareOffScope(enum.StrEnum):
    """Whose trades a square-off closes: the whole account's net, or this playbook's own (its runs')."""

    ACCOUNT = "account"
    PLAYBOOK = "playbook"


class SquareOffStep(Timing):
    kind: Literal["square_off"]
    id: Identifier
    description: str | None = None
    filter: OrderFilter = Field(default_factory=OrderFilter)
    # account: every net position; playbook / {tag: X}: only the net of that scope's journaled fills
    # (today's), capped by the broker's net of the same sign (runner.engine.steps.square_off.scope_net).
    scope: SquareOffScope | TagScope = SquareOffScope.ACCOUNT
    cancel_open_orders: bool = True
    escalation: Escalation | None = None  # None: market orders straight away
    verify_timeout: Duration = "30s"


class WaitStep(Timing):
    kind: Literal["wait"]
    id: Identifier
    description: str | None = None
    until: LocalTime | None = None
    order: OrderRef | None = None
    status: list[OrderStatus] | None = None  # wait for the order to reach one of these
    timeout: Duration = "60s"
    on_timeout: Literal["fail", "continue", "stop"] = "fail"


MemberStep = Annotated[
    PlaceStep | SpreadStep | ModifyStep | CancelStep | SquareOffStep | WaitStep, Field(discriminator="kind")
]


class ParallelStep(Timing):
    """Members run at once (asyncio tasks in one run: :mod:`runner.engine.group`). ``Playbook.steps``
    holds the members in its place, in order; :meth:`Playbook.group_of` says which group a step is in."""

    kind: Literal["parallel"]
    id: Identifier
    description: str | None = None
    steps: Annotated[list[MemberStep], Field(min_length=2)]


Step = Annotated[
    PlaceStep | SpreadStep | ModifyStep | CancelStep | SquareOffStep | WaitStep | ParallelStep,
    Field(discriminator="kind"),
]


# --- limits & playbook ------------------------------------------------------------------------------


class Limits(_Model):
    max_quantity_per_order: Annotated[int, Field(gt=0)] | None = None
    max_lots_per_order: Annotated[int, Field(gt=0)] | None = None
    max_notional: Annotated[Decimal, Field(gt=0)] | None = None  # per order, rupees
    max_orders_per_run: Annotated[int, Field(gt=0)] | None = None
    allowed_instruments: list[InstrumentRef] | None = None
    allowed_exchanges: list[Exchange] | None = None


VarValue = int | Decimal | str | bool | dt.date


class AccountBusyPolicy(_Model):
    """What a step does when another run holds the account (runner.engine.leases): wait this long, then
    refuse."""

    wait: Duration


class Playbook(_Model):
    version: Literal[1]
    name: Identifier
    description: str | None = None
    owner: str | None = None
    tags: list[str] = Field(default_factory=list)
    account: Identifier = "paper"
    timezone: str
    calendar: Literal["NSE", "BSE", "MCX"] | None = None
    schedule: Schedule | None = None
    vars: dict[Identifier, VarValue] = Field(default_factory=dict)
    instruments: dict[Identifier, InstrumentSpec] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    account_busy: AccountBusyPolicy | None = None  # None: the runner's default (--busy-wait overrides)
    steps: Annotated[list[Step], Field(min_length=1)]
    # member step id -> its parallel group (the groups are flattened into ``steps`` once validated)
    _groups: dict[str, ParallelStep] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _flatten_groups(self) -> Playbook:
        """Every consumer (engine, plan, checks, preflight) sees the leaf steps in order; the engine runs
        the members of one group (consecutive in ``steps``) at once."""
        if any(isinstance(s, ParallelStep) for s in self.steps):
            flat: list[Any] = []
            for s in self.steps:
                if isinstance(s, ParallelStep):
                    flat.extend(s.steps)
                    self._groups.update((m.id, s) for m in s.steps)
                else:
                    flat.append(s)
            object.__setattr__(self, "steps", flat)  # frozen model: validated once, flattened here
        return self

    def group_of(self, step_id: str) -> ParallelStep | None:
        """The parallel group ``step_id`` is a member of, or None."""
        return self._groups.get(step_id)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. Asia/Kolkata)") from None
        return value

    # --- helpers used by the engine -----------------------------------------------------------------

    def busy_wait(self, override: float | None, default: float) -> float:
        """Seconds a step waits for a busy account: the CLI's ``--busy-wait``, else ``account_busy.wait``,
        else ``default``."""
        if override is not None:
            return override
        if self.account_busy is not None:
            return parse_duration(self.account_busy.wait).total_seconds()
        return default

    def step(self, step_id: str) -> Any:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def instrument(self, ref: InstrumentSpec | str) -> Instrument:
        if isinstance(ref, InstrumentSpec):
            return ref.to_instrument()
        return self.instruments[ref].to_instrument()

    def resolve_int(self, value: int | str) -> int:
        """Apply ``${var}`` / ``${a * b}`` substitution to a quantity."""
        result = self._substitute(value)
        if isinstance(result, bool) or not isinstance(result, int | Decimal) or result != int(result):
            raise ValueError(f"{value!r} does not give a whole number (got {result!r})")
        return int(result)

    def resolve_decimal(self, value: Decimal | int | str) -> Decimal:
        result = self._substitute(value)
        if isinstance(result, bool) or not isinstance(result, int | Decimal):
            raise ValueError(f"{value!r} does not give a number (got {result!r})")
        return Decimal(result)

    def _substitute(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        m = VAR_RE.match(value)
        if not m:
            return value
        left = self._var(m[1])
        if m[2] is None:
            return left
        right = int(m[2]) if m[2].isdigit() else self._var(m[2])
        return left * right

    def _var(self, name: str) -> Any:
        try:
            return self.vars[name]
        except KeyError:
            raise ValueError(f"undefined variable {name!r}") from None
