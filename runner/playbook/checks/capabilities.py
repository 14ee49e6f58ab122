"""What the playbook needs of its account's broker (``runner validate --accounts``): native spreads, market
data for LTP-relative prices, the order types and products the broker takes. Facts come from
:mod:`runner.brokers.descriptions`, never from a login; skipped when the account's broker is unknown."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.playbook.checks.doc import Doc, Path
from runner.playbook.checks.sink import Sink

if TYPE_CHECKING:
    from runner.brokers.instruments import InstrumentMaster


@functools.lru_cache(maxsize=8)
def _local_master(path: str, broker: str, mtime: float) -> InstrumentMaster | None:
    """The account's master file, loaded once per process (and again when it changes). Only the generic
    CSV is read here; a broker's own format is checked by ``runner check`` through the adapter."""
    from runner.brokers.instruments import InstrumentMaster

    try:
        return InstrumentMaster.load(path, broker=broker)
    except (OSError, KeyError, ValueError):
        return None  # unreadable: the accounts file's own report says so


def check_inline_sizes(doc: Doc, sink: Sink) -> None:
    """Inline lot/tick/freeze against the account's local master (the master wins at run time)."""
    if doc.accounts is None:
        return
    facts = doc.accounts.facts_of(str(doc.data.get("account", "paper")))
    if facts is None or not facts.instruments or not facts.instruments.endswith(".csv"):
        return
    try:
        mtime = os.stat(facts.instruments).st_mtime
    except OSError:
        return
    master = _local_master(facts.instruments, facts.broker, mtime)
    if master is None:
        return
    from runner.playbook.checks.master import Finding, check_against_master

    for problem in check_against_master(doc, master):
        if problem.finding is Finding.MISMATCH:
            sink.add(problem.path, problem.message, problem.hint)
        elif problem.finding is not Finding.UNCHECKED:
            sink.warn(problem.path, problem.message, problem.hint)


def _ltp_refs(node: Any, path: Path) -> Iterator[Path]:
    """Every ``{ltp: ...}`` price under node."""
    if isinstance(node, dict):
        if "ltp" in node:
            yield path
            return
        for key, value in node.items():
            yield from _ltp_refs(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _ltp_refs(value, (*path, i))


def check_broker_capabilities(doc: Doc, sink: Sink) -> None:
    if doc.accounts is None:
        return
    account = str(doc.data.get("account", "paper"))
    facts = doc.accounts.facts_of(account)
    if facts is None:
        return
    from runner.brokers.base import Capability
    from runner.brokers.descriptions import describe
    from runner.model import OrderType, Product

    desc = describe(facts.broker)
    if desc is None:
        return  # the accounts file's own report names the unknown broker kind
    who = f"account '{account}' ({desc.kind})"
    for i, step in enumerate(doc.steps):
        native = step["kind"] == "spread" and step.get("mode") == "native"
        if native and not desc.has(Capability.NATIVE_MULTILEG):
            sink.add(
                ("steps", i, "mode"),
                f"{who} has no native multileg orders: a native spread cannot be sent",
                "write mode: auto (native where the broker has it, else legged)",
            )
        limit = desc.multileg_max_legs
        legs = step.get("legs")
        if native and desc.has(Capability.NATIVE_MULTILEG) and limit is not None and isinstance(legs, list) \
                and len(legs) > limit:
            sink.add(
                ("steps", i, "mode"),
                f"{who}'s native multileg orders take at most {limit} legs, not {len(legs)}",
                "write mode: auto (native up to that many legs, else legged)",
            )
    market_data = desc.market_data(dict.fromkeys(facts.endpoints))
    if not market_data:
        why = (
            f"endpoints.{desc.market_data_endpoint[0]} is not set"
            if desc.has(Capability.MARKET_DATA)
            else "the broker has no market data"
        )
        fix = (
            f"set endpoints.{desc.market_data_endpoint[0]} in the account"
            if desc.has(Capability.MARKET_DATA)
            else "write a fixed price"
        )
        for i, step in enumerate(doc.steps):
            for where in _ltp_refs(step, ("steps", i)):
                sink.add(where, f"{who} cannot price from the LTP: {why}", fix)
            escalation = step.get("escalation") if step["kind"] == "square_off" else None
            if isinstance(escalation, dict) and escalation.get("limit_offset") is not None:
                policy = escalation.get("no_price", "market")
                message = f"{who} has no prices ({why}): the limit-first exits "
                if policy == "fail":
                    sink.add(("steps", i, "escalation"), message + "fail (no_price: fail)", fix)
                else:
                    sink.warn(("steps", i, "escalation"), message + "become market orders", fix)
    for path, fields, _what in doc.orders():
        otype = fields.get("type", "MARKET")
        try:
            order_type = OrderType(otype)
        except ValueError:
            continue  # the schema reported it
        if not desc.accepts(order_type):
            ok = ", ".join(t.value for t in OrderType if desc.accepts(t))
            sink.add((*path, "type"), f"{who} does not take {otype} orders", f"use one of: {ok}")
        product = fields.get("product", "MIS")
        if product in Product.__members__ and Product(product) not in desc.products:
            ok = ", ".join(sorted(p.value for p in desc.products))
            sink.add((*path, "product"), f"{who} does not take product {product}", f"use one of: {ok}")
