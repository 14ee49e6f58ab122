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

REGISTRY: dict[str, str] = {
    "paper": "runner.brokers.paper.broker:create",
    "blitz": "runner.brokers.blitz.client:create",
    "kotak_neo": "runner.brokers.kotak_neo.client:create",
    "alphapoint": "runner.brokers.alphapoint.client:create",
    "odin": "runner.brokers.odin.client:create",
}


def create_broker(account: Account, **context: Any) -> Broker:
    try:
        target = REGISTRY[account.broker]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown broker kind {account.broker!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    broker: Broker = factory(account, **context)
    return broker
