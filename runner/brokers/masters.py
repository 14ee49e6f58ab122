"""Brokers' own instrument masters: one contract, one registry.

Each venue package that publishes a master has a ``master.py`` exposing ``FORMAT``, a
:class:`MasterFormat`. ``download`` fetches the broker's files exactly as published (bytes, no parsing);
``parse`` is pure translation, so the traps of each format are tested on fixture files without I/O.
What to do with a download (snapshot, compare with the last good one, quarantine) is not the format's
business: see :mod:`runner.instruments` (sync) for that.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.brokers.instruments import MasterRow


@dataclass(frozen=True, slots=True)
class MasterFile:
    """One file of a broker's master as downloaded: its name (e.g. ``nse_fo.csv``) and raw bytes."""

    name: str
    content: bytes


class MasterFormat(Protocol):
    broker: str

    async def download(self, account: Account) -> list[MasterFile]:
        """Fetch every file of the account's master from the broker (or its simulator)."""
        ...

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        """The rows of ``files``; raises :class:`MasterFormatError` naming the file and row on bad input."""
        ...


class MasterFormatError(ValueError):
    """A master file that cannot be read as the broker's format (names the file and, where known, the row)."""


# broker kind -> "module:attribute" of its MasterFormat; lazy so `runner --help` stays fast.
FORMATS: dict[str, str] = {
    "paper": "runner.brokers.paper.master:FORMAT",
}


def master_format(broker: str) -> MasterFormat | None:
    """The broker's master format, or None where the broker publishes none we read."""
    target = FORMATS.get(broker)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    fmt: MasterFormat = getattr(importlib.import_module(module_name), attr)
    return fmt
