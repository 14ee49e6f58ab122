"""A master in the generic CSV format (:mod:`runner.brokers.instruments`) served over HTTP: for a venue
whose format we do not read, or a desk's own curated list. An account opts in with
``endpoints: {master_csv: URL}``, which takes precedence over the broker's own format."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from runner.brokers.instruments import MasterRow, row_from_mapping
from runner.brokers.masters import MasterFile, MasterFormat, MasterFormatError, master_format

if TYPE_CHECKING:
    from runner.accounts import Account

ENDPOINT = "master_csv"
REQUIRED = ("exchange", "symbol")


class GenericCsvFormat:
    broker = "generic"

    async def download(self, account: Account) -> list[MasterFile]:
        from runner.brokers.http import make_client

        url = account.endpoints[ENDPOINT]
        async with make_client(url, timeout=account.timeout_seconds, transport="httpx") as client:
            response = await client.get(url)
            response.raise_for_status()
        name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "master.csv"
        return [MasterFile(name, response.content)]

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for f in files:
            try:
                text = f.content.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise MasterFormatError(f"{f.name}: not UTF-8 text ({exc})") from None
            reader = csv.DictReader(io.StringIO(text, newline=""))
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
            if missing:
                raise MasterFormatError(
                    f"{f.name}: no column {', '.join(missing)} (header {reader.fieldnames})"
                )
            for n, rec in enumerate(reader, start=2):
                if None in rec or any(v is None for v in rec.values()):  # short or long row
                    raise MasterFormatError(f"{f.name}: line {n}: wrong number of fields (truncated?)")
                try:
                    yield row_from_mapping(rec)
                except (ValueError, ArithmeticError) as exc:
                    raise MasterFormatError(f"{f.name}: line {n}: {exc}") from None


GENERIC_CSV = GenericCsvFormat()


def format_for(account: Account) -> MasterFormat | None:
    """The format the account's master is synced in: ``endpoints.master_csv`` if set, else the broker's
    own (None: nothing to sync)."""
    if ENDPOINT in account.endpoints:
        return GENERIC_CSV
    return master_format(account.broker)
