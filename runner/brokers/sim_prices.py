"""The one price path every loopback simulator trades on: the paper broker's reference market.

Each simulator (kotak_neo, odin, blitz, alphapoint) builds its :class:`MatchingEngine` on
:func:`sim_price_path`, the same path :func:`runner.brokers.paper.broker.create` gives a paper account
(``runner/data/paper_prices.yaml``: NIFTY ~24500, options from the model), so a simulator's quotes agree
with its fills and with the strike band of its master (:func:`runner.brokers.paper.master.venue_master`,
banded around the same reference spots). Options are the paper account's: ``seed`` (``runner sim --seed``;
default 0), ``prices``, ``price_csv``, ``volatility_ppm``, ``reference_prices``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.brokers.paper.broker import references_from_options
from runner.brokers.paper.matching import MatchingConfig
from runner.brokers.paper.price_paths import PricePath, path_from_options

DEFAULT_SEED = 0  # `runner sim --seed`'s default


def sim_price_path(options: Mapping[str, Any] | None = None, *, tz: str = "Asia/Kolkata") -> PricePath:
    """The price path of a simulator started with ``options`` (a paper account's price options)."""
    opts = dict(options or {})
    opts.setdefault("seed", DEFAULT_SEED)
    return path_from_options(opts, tz=tz, references=references_from_options(opts))


__all__ = ["DEFAULT_SEED", "sim_price_path"]


def sim_matching(options: Mapping[str, Any] | None = None) -> MatchingConfig:
    """A simulator's matching rules: a paper account's, except that DAY orders do not expire at 15:30
    (a simulator trades at any hour, as its `runner sim` account says: `enforce_calendar: false`); an
    explicit ``session_close`` option still sets one."""
    return MatchingConfig.from_options({"session_close": None, **dict(options or {})})
