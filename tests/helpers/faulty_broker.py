"""Fault injection around a real broker (the paper broker): every call goes through to it unless a
fault is scripted for that method. Used to drive the engine's retry / lookup paths."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from runner.brokers.base import Broker
from runner.model import Modification, MultilegRequest, Order, OrderRequest, Position


class Faulty:
    def __init__(self, inner: Any) -> None:
        self.inner: Broker = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        # method -> list of actions; an action is ("raise", exc), ("after", exc) = call through then raise,
        # or ("hook", fn) = call fn(*args) then through.
        self.script: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)

    def fail(self, method: str, exc: BaseException, *, after_send: bool = False) -> Faulty:
        self.script[method].append(("after" if after_send else "raise", exc))
        return self

    def hook(self, method: str, fn: Callable[..., None]) -> Faulty:
        self.script[method].append(("hook", fn))
        return self

    async def _go(self, method: str, *args: Any) -> Any:
        self.calls[method] += 1
        action = self.script[method].pop(0) if self.script[method] else None
        if action and action[0] == "raise":
            raise action[1]
        if action and action[0] == "hook":
            action[1](*args)
            if action[1].__dict__.get("persistent"):
                self.script[method].insert(0, action)
        result = await getattr(self.inner, method)(*args)
        if action and action[0] == "after":
            raise action[1]
        return result

    async def connect(self) -> None:
        await self._go("connect")

    async def close(self) -> None:
        await self.inner.close()

    async def place(self, request: OrderRequest) -> Order:
        return await self._go("place", request)  # type: ignore[no-any-return]

    async def modify(self, order: Order, change: Modification) -> Order:
        return await self._go("modify", order, change)  # type: ignore[no-any-return]

    async def cancel(self, order: Order) -> Order:
        return await self._go("cancel", order)  # type: ignore[no-any-return]

    async def get_order(self, client_order_id: str) -> Order | None:
        return await self._go("get_order", client_order_id)  # type: ignore[no-any-return]

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        return await self._go("get_order_by_broker_id", broker_order_id)  # type: ignore[no-any-return]

    async def orders(self) -> Sequence[Order]:
        return await self._go("orders")  # type: ignore[no-any-return]

    async def open_orders(self) -> Sequence[Order]:
        return await self._go("open_orders")  # type: ignore[no-any-return]

    async def positions(self) -> Sequence[Position]:
        return await self._go("positions")  # type: ignore[no-any-return]


class FaultyNoMultileg(Faulty):
    """The same broker without native multileg (forces legged spreads)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        from runner.brokers.base import Capability

        self.capabilities = frozenset(inner.capabilities - {Capability.NATIVE_MULTILEG})


class FaultyMultileg(Faulty):
    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        return await self._go("place_multileg", request)  # type: ignore[no-any-return]

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        return await self._go("cancel_multileg", legs)  # type: ignore[no-any-return]
