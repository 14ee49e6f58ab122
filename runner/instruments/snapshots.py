"""Snapshot files: content-addressed under the journal's state directory, with a parsed cache.

``<state>/masters/<sha256>/`` holds the files exactly as downloaded (names kept) and, for a good
snapshot, ``master.csv``: its rows in the generic CSV format (:mod:`runner.brokers.instruments`), which
is what a run loads at start. CSV, not pickle: anyone who can write the directory could otherwise make
the runner execute code. The state directory is the SQLite journal's directory (``.runner/`` by
default), else ``./.runner`` for a PostgreSQL journal.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import make_url

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.masters import MasterFile
from runner.model import Instrument, OptionType

CACHE_NAME = "master.csv"
COLUMNS = (
    "exchange",
    "symbol",
    "expiry",
    "strike",
    "option_type",
    "lot_size",
    "tick_size",
    "freeze_quantity",
    "token",
    "trading_symbol",
)


def state_dir(db_url: str | None = None) -> Path:
    """Where the journal keeps its state: the SQLite file's directory, else ``./.runner``."""
    from runner.journal.db import default_db_url, normalize_url

    url = make_url(normalize_url(db_url or default_db_url()))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(str(url.database)).expanduser().resolve().parent
    return Path.cwd() / ".runner"


def masters_dir(db_url: str | None = None) -> Path:
    return state_dir(db_url) / "masters"


def content_sha256(files: Sequence[MasterFile]) -> str:
    """The snapshot's identity: sha256 over every file's name and bytes, in name order (a renamed file
    is different content)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        name = f.name.encode()
        h.update(len(name).to_bytes(8, "big") + name + len(f.content).to_bytes(8, "big"))
        h.update(f.content)
    return h.hexdigest()


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/")) or "file"
    return base if base not in (".", "..") else "file"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_files(directory: Path, files: Sequence[MasterFile]) -> None:
    """The download exactly as received (kept for quarantined snapshots too, for inspection)."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = directory / _safe_name(f.name)
        if not target.exists():  # content-addressed: same sha, same bytes
            _write_atomic(target, f.content)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, OptionType):
        return value.value
    return str(value)


def rows_to_csv(rows: Iterable[MasterRow]) -> bytes:
    rows = list(rows)
    extra_cols = sorted({k for r in rows for k in r.extra} - set(COLUMNS))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow((*COLUMNS, *extra_cols))
    for r in rows:
        i = r.instrument
        w.writerow(
            (
                i.exchange,
                i.symbol,
                _text(i.expiry),
                _text(i.strike),
                _text(i.option_type),
                _text(i.lot_size),
                _text(i.tick_size),
                _text(i.freeze_quantity),
                _text(r.token),
                _text(r.trading_symbol),
                *(r.extra.get(c, "") for c in extra_cols),
            )
        )
    return out.getvalue().encode()


def write_cache(directory: Path, rows: Iterable[MasterRow]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / CACHE_NAME, rows_to_csv(rows))


def load_cache(directory: str | Path, *, broker: str | None = None) -> InstrumentMaster:
    """A good snapshot's rows. Masters repeat few distinct values (a handful of expiries, lots, ticks,
    strikes shared by both option types), so each is parsed once, and the instrument's key is built from
    the cached text (written normalized) instead of from Decimals: about twice as fast as the generic
    loader (bench/instrument_search.py)."""
    master = InstrumentMaster(broker=broker)
    with open(Path(directory) / CACHE_NAME, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        extra_cols = [(n, c) for n, c in enumerate(header) if c not in COLUMNS]
        ex, sy, ep, st, ot, lo, ti, fr, tok, ts = (header.index(c) for c in COLUMNS)
        dates: dict[str, dt.date | None] = {"": None}
        decs: dict[str, Decimal | None] = {"": None}
        ints: dict[str, int | None] = {"": None}
        opts: dict[str, OptionType | None] = {"": None}
        strike_text: dict[str, str] = {"": ""}  # as Instrument.key writes it, whatever the file's spelling
        for rec in reader:
            e, s, o, lot, tick, frz = rec[ep], rec[st], rec[ot], rec[lo], rec[ti], rec[fr]
            if e not in dates:
                dates[e] = dt.date.fromisoformat(e)
            if s not in strike_text:
                decs[s] = Decimal(s)
                strike_text[s] = format(Decimal(s).normalize(), "f")
            if tick not in decs:
                decs[tick] = Decimal(tick)
            if o not in opts:
                opts[o] = OptionType(o.upper())
            if lot not in ints:
                ints[lot] = int(lot)
            if frz not in ints:
                ints[frz] = int(frz)
            inst = Instrument(rec[ex], rec[sy], dates[e], decs[s], opts[o], ints[lot], decs[tick], ints[frz])
            extra = {c: rec[n] for n, c in extra_cols if rec[n]} if extra_cols else {}
            key = " ".join(p for p in (rec[ex], rec[sy], e, strike_text[s], o.upper()) if p)
            master.add(MasterRow(inst, rec[tok] or None, rec[ts] or None, extra), key)
    return master
