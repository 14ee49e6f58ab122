"""At the instant every armed fire's primed request is written through its broker's wrappers
(runner.brokers.primed.write_primed): finding the primable adapter under them must not cost a
runtime-checkable Protocol check per wrapper per fire (6-13 us each, ~20 ms for the last of 1,000)."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from runner.brokers import primed
from runner.model import Instrument, OrderRequest, Side


class Adapter:
    def __init__(self) -> None:
        self.written: list[str] = []

    async def prime(self, request: OrderRequest) -> None:
        return None

    def unprime(self, client_order_id: str) -> None:
        return None

    def write_primed(self, request: OrderRequest) -> bool:
        self.written.append(request.client_order_id)
        return True


class Wrapper:
    """Like the engine's forwarding wrappers: the broker it wraps as ``inner``."""

    def __init__(self, inner: Any, *, sends: bool = True) -> None:
        self.inner = inner
        self.sends = sends

    def sends_now(self, request: OrderRequest) -> bool:
        return self.sends


class Plain:
    inner = None


def request(cid: str) -> OrderRequest:
    return OrderRequest(cid, Instrument("NSE", "RELIANCE"), Side.BUY, 1)


def test_the_adapter_under_wrappers_writes_and_a_wrapper_can_hold_it_back() -> None:
    adapter = Adapter()
    assert primed.write_primed(Wrapper(Wrapper(adapter)), request("c1")) is True
    assert primed.write_primed(Wrapper(Wrapper(adapter), sends=False), request("c2")) is False
    assert adapter.written == ["c1"]
    assert primed.adapter_of(Wrapper(adapter)) is adapter
    assert primed.adapter_of(Wrapper(Plain())) is None
    assert primed.write_primed(Plain(), request("c3")) is False


def test_writes_at_the_instant_check_the_protocol_once_per_class_not_per_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks = 0
    meta = type(primed.Primable)
    assert meta is typing._ProtocolMeta  # type: ignore[attr-defined]
    real = meta.__instancecheck__

    def counting(cls: type, instance: object) -> bool:
        nonlocal checks
        if cls is primed.Primable:
            checks += 1
        return bool(real(cls, instance))

    monkeypatch.setattr(meta, "__instancecheck__", counting)
    adapter = Adapter()
    broker = Wrapper(Wrapper(adapter))
    primed.write_primed(broker, request("warm"))  # classes seen before this test may be known already
    before = checks
    for i in range(100):
        assert primed.write_primed(broker, request(f"c{i}"))
        assert primed.adapter_of(broker) is adapter
    assert checks == before
    assert len(adapter.written) == 101
