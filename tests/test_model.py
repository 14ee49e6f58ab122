import datetime as dt
from decimal import Decimal

import pytest

from runner.model import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Instrument,
    OptionType,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    check_transition,
)

S = OrderStatus
NIFTY_CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal("24500"), OptionType.CE)


def test_every_status_has_a_row_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_never_move(terminal: OrderStatus) -> None:
    for new in OrderStatus:
        if new is terminal:
            assert check_transition(terminal, new) is new
        else:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.PENDING_NEW, S.OPEN),
        (S.OPEN, S.PARTIALLY_FILLED),
        (S.PARTIALLY_FILLED, S.FILLED),
        (S.PENDING_CANCEL, S.FILLED),
        (S.UNKNOWN, S.FILLED),
        (S.OPEN, S.UNKNOWN),
    ],
)
def test_legal_transitions(old: OrderStatus, new: OrderStatus) -> None:
    assert check_transition(old, new) is new


@pytest.mark.parametrize(
    ("old", "new"), [(S.PARTIALLY_FILLED, S.OPEN), (S.OPEN, S.PENDING_NEW), (S.PARTIALLY_FILLED, S.REJECTED)]
)
def test_illegal_transitions(old: OrderStatus, new: OrderStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)


def test_instrument_key_is_broker_neutral_and_ignores_metadata() -> None:
    assert NIFTY_CE.key == "NFO NIFTY 2026-12-29 24500 CE"
    assert Instrument("NSE", "RELIANCE").key == "NSE RELIANCE"
    with_lot = Instrument("NFO", "NIFTY", NIFTY_CE.expiry, Decimal("24500.00"), OptionType.CE, lot_size=75)
    assert with_lot.key == NIFTY_CE.key


def test_order_request_refuses_float_prices_and_missing_prices() -> None:
    with pytest.raises(TypeError):
        OrderRequest("c1", NIFTY_CE, Side.BUY, 75, OrderType.LIMIT, price=120.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a price"):
        OrderRequest("c1", NIFTY_CE, Side.BUY, 75, OrderType.LIMIT)
    with pytest.raises(ValueError, match="trigger_price"):
        OrderRequest("c1", NIFTY_CE, Side.SELL, 75, OrderType.SL_M)
    with pytest.raises(ValueError, match="positive"):
        OrderRequest("c1", NIFTY_CE, Side.SELL, 0)


def test_side_helpers() -> None:
    assert Side.BUY.opposite is Side.SELL and Side.SELL.sign == -1
