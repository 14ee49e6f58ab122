"""Broker registry: broker kind (as written in an accounts file) -> ``module:factory``.

Imports are lazy so ``runner --help`` does not pay for httpx or websockets. A factory is called as
``factory(account, context)`` and returns a :class:`runner.brokers.base.Broker`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.brokers.base import Broker
    from runner.brokers.instruments import InstrumentMaster

REGISTRY: dict[str, str] = {
    "paper": "runner.brokers.paper.broker:create",
    "blitz": "runner.brokers.blitz.client:create",
    "kotak_neo": "runner.brokers.kotak_neo.client:create",
    "alphapoint": "runner.brokers.alphapoint.client:create",
    "odin": "runner.brokers.odin.client:create",
}

# Broker kind -> ``module:function`` loading an account's instrument master as its factory does (kinds
# that resolve against a master of their own; paper generates one). Lets a daemon parse masters in a
# worker thread before it builds brokers on its event loop (:meth:`BrokerPool.preload_masters`).
MASTERS: dict[str, str] = {
    "blitz": "runner.brokers.blitz.client:master",
    "kotak_neo": "runner.brokers.kotak_neo.client:master",
    "alphapoint": "runner.brokers.alphapoint.client:master",
    "odin": "runner.brokers.odin.client:master",
}


def _target(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_master(account: Account, **context: Any) -> InstrumentMaster | None:
    """``account``'s instrument master, as its broker's factory loads it (cached per content by
    :func:`runner.instruments.load.master_for`); None for a kind without one."""
    spec = MASTERS.get(account.broker)
    if spec is None:
        return None
    master: InstrumentMaster = _target(spec)(account, **context)
    return master


def create_broker(account: Account, **context: Any) -> Broker:
    try:
        target = REGISTRY[account.broker]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown broker kind {account.broker!r} (known: {known})") from None
    broker: Broker = _target(target)(account, **context)
    return broker
