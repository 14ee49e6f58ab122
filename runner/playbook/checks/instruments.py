"""Instrument specs (segment rules, option fields, tick) and references to instrument aliases."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from runner.playbook.checks.doc import CASH, DERIVATIVES, Doc, Path
from runner.playbook.checks.sink import Sink, did_you_mean
from runner.playbook.rolling import DEFAULT_UNDERLYING_EXCHANGE


def check_spec(sink: Sink, path: Path, spec: dict[str, Any]) -> None:
    exch = spec["exchange"]
    opt, strike, expiry = spec.get("option_type"), spec.get("strike"), spec.get("expiry")
    if opt is not None and (strike is None or expiry is None):
        sink.add(path, "an option needs expiry, strike and option_type", "add the missing expiry/strike")
    if strike is not None and opt is None:
        sink.add((*path, "strike"), "strike without option_type", "add option_type: CE or PE", key=True)
    if exch in DERIVATIVES and expiry is None:
        sink.add(path, f"{exch} instruments are derivatives and need an expiry", "add expiry: YYYY-MM-DD")
    if exch in CASH and (expiry is not None or opt is not None):
        sink.add(
            (*path, "exchange"),
            f"{exch} is the cash segment; derivatives trade on {'NFO' if exch == 'NSE' else 'BFO'}",
            f"write exchange: {'NFO' if exch == 'NSE' else 'BFO'}",
        )
    tick = spec.get("tick_size")
    fixed_strike = strike is not None and not isinstance(strike, str)
    if tick is not None and fixed_strike and Decimal(str(strike)) % Decimal(tick):
        sink.warn((*path, "strike"), f"strike {strike} is not a multiple of tick_size {tick}")
    if isinstance(strike, str) and "underlying" not in spec and exch not in DEFAULT_UNDERLYING_EXCHANGE:
        sink.add(
            (*path, "strike"),
            f"an {strike} strike on {exch} needs the underlying whose LTP sets it",
            "add underlying: <alias> (e.g. the nearest monthly future) or {exchange: ..., symbol: ...}",
        )
    if "underlying" in spec and not isinstance(strike, str):
        sink.warn((*path, "underlying"), "underlying is only used by an atm strike", key=True)


def is_rolling(spec: dict[str, Any] | None) -> bool:
    """A relative expiry or an ``atm`` strike: the contract is known only when the step runs."""
    return spec is not None and (isinstance(spec.get("expiry"), dict) or isinstance(spec.get("strike"), str))


def check_underlyings(doc: Doc, sink: Sink) -> None:
    """``underlying:`` aliases exist and do not lead back to themselves."""
    for alias, spec in doc.instruments.items():
        seen = {alias}
        ref, path = spec.get("underlying"), ("instruments", alias, "underlying")
        while isinstance(ref, str):
            if ref in seen:
                sink.add(
                    path, f"underlying of '{alias}' leads back to '{ref}'", "name the index or a future"
                )
                break
            seen.add(ref)
            target = resolve(doc, sink, path, ref)
            if target is None:
                break
            ref = target.get("underlying")


def resolve(doc: Doc, sink: Sink, path: Path, ref: Any) -> dict[str, Any] | None:
    """The spec an instrument reference names (inline specs are checked here); None if unknown."""
    if isinstance(ref, dict):
        if path[0] != "instruments":
            check_spec(sink, path, ref)
            if is_rolling(ref):
                sink.add(
                    path,
                    "a rolling instrument (relative expiry or atm strike) must be declared under "
                    "instruments:",
                    "give it an alias under instruments: and refer to it by that name (resolved once a run)",
                )
        return ref
    if ref in doc.instruments:
        spec: dict[str, Any] = doc.instruments[ref]
        return spec
    guess = did_you_mean(ref, doc.instruments)
    known = ", ".join(doc.instruments) or "none defined"
    sink.add(
        path,
        f"unknown instrument '{ref}'",
        f"did you mean '{guess}'?" if guess else f"define it under instruments: (known: {known})",
    )
    return None


def check_instruments(doc: Doc, sink: Sink) -> None:
    for alias, spec in doc.instruments.items():
        check_spec(sink, ("instruments", alias), spec)


def check_allowed_instruments(doc: Doc, sink: Sink) -> None:
    for i, ref in enumerate(doc.limits.get("allowed_instruments", [])):
        resolve(doc, sink, ("limits", "allowed_instruments", i), ref)  # a rolling alias: its run's contract


def check_filters(doc: Doc, sink: Sink) -> None:
    """Instrument references in cancel all_open: and square_off filter: blocks."""
    for i, step in enumerate(doc.steps):
        key = {"cancel": "all_open", "square_off": "filter"}.get(step["kind"])
        if key is None or key not in step:
            continue
        for j, ref in enumerate(step[key].get("instruments", [])):
            resolve(doc, sink, ("steps", i, key, "instruments", j), ref)
