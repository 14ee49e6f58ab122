"""``runner sim BROKER``: start a loopback simulator speaking that broker's wire format.

Each simulator module ``runner/brokers/<broker>/sim.py`` exposes ``async def serve_forever(host, port, faults,
options) -> None`` and is backed by the paper matching engine. Its first stdout line is one JSON object
(:func:`first_line`): ``broker``, ``url``, ``port``, ``account`` (a ready accounts-file entry: endpoints,
credentials as ``{env: ...}`` references, options; no instrument file: the adapter downloads the simulator's
master in the broker's own format, as from the broker) and ``env`` (those variables set to the simulator's
default credentials). ``--master-out PATH`` also writes that master as a generic CSV and names it in
``account.instruments`` (an override file, e.g. for ``runner validate --accounts`` lot/tick checks).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.cli import EXIT_BROKER, EXIT_OK, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.brokers.instruments import InstrumentMaster

SIMS = ("blitz", "kotak_neo", "alphapoint", "odin")
# The default users each simulator starts with (what `account`/`env` on the first line log in as).
DEFAULT_USERS = """\
default users (the first stdout line carries them as `account` + `env`):
  kotak_neo   UCC derived from the account name 'sim', MPIN 2468, a fixed TOTP secret and access token
              (until a user is registered the simulator accepts any UCC/TOTP/MPIN)
  blitz       user id SIM1, app key sim-app-key (the simulator accepts any user/app key)
  alphapoint  username trader, password trader-pass (UserId 96, AccountId 9)
  odin        user SIM1, password sim-pass, api key sim-api-key, x-api-key sim-x-api-key,
              TOTP secret JBSWY3DPEHPK3PXP; the feed is the WebSocket at ws://HOST:PORT/
"""
EXAMPLES = """\
  runner sim blitz --port 9100
  runner sim kotak_neo --faults 'latency=5ms,drop=0.05,seed=7'
  runner sim odin | head -1 | jq '{accounts: {sim: .account}}'   # an accounts file (YAML is a JSON superset)

""" + DEFAULT_USERS
MASTER_COLUMNS = ("exchange", "symbol", "expiry", "strike", "option_type", "lot_size", "tick_size",
                  "freeze_quantity", "token", "trading_symbol")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from runner.commands.arguments import add_log_file_argument

    parser.add_argument("broker", choices=SIMS, help="which broker's wire format to speak")
    add_log_file_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument(
        "--port", type=int, default=0, metavar="PORT", help="port (0 = pick a free one and print it)"
    )
    parser.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="fault spec, e.g. 'latency=5ms,drop=0.05,seed=7' (see runner/brokers/faults.py)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N",
        help="seed of the price walk around the paper broker's reference market "
        "(runner/data/paper_prices.yaml)",
    )
    parser.add_argument(
        "--master-out",
        default=None,
        metavar="PATH",
        help="also write the simulator's instrument master as a generic CSV and name it in "
        "`account.instruments` (default: none; the adapter downloads the master from the simulator in the "
        "broker's own format)",
    )
    parser.add_argument(
        "--loop", default="auto", choices=("auto", "asyncio", "uvloop"),
        help="the simulator's event loop: auto (default) is uvloop when installed (pip install "
        "'runner[sim]'), else asyncio; a burst of requests is cheaper to serve on uvloop",
    )


def write_master(master: InstrumentMaster, path: str | Path) -> Path:
    """Write ``master`` in the generic CSV format (runner/brokers/instruments.py), extra columns kept."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = list(master)
    extras = sorted({k for r in rows for k in r.extra} - set(MASTER_COLUMNS))
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*MASTER_COLUMNS, *extras])
        for r in rows:
            i = r.instrument
            w.writerow([
                i.exchange, i.symbol, i.expiry.isoformat() if i.expiry else "",
                "" if i.strike is None else str(i.strike),
                i.option_type.value if i.option_type else "",
                "" if i.lot_size is None else i.lot_size, "" if i.tick_size is None else str(i.tick_size),
                "" if i.freeze_quantity is None else i.freeze_quantity, r.token or "", r.trading_symbol or "",
                *(r.extra.get(k, "") for k in extras),
            ])
    return p.resolve()


def master_path(options: Mapping[str, Any], broker: str, port: int) -> Path:
    if options.get("master_out"):
        return Path(str(options["master_out"]))
    return Path(tempfile.mkdtemp(prefix=f"runner-sim-{broker}-{port}-")) / "instruments.csv"


def first_line(
    broker: str,
    url: str,
    port: int,
    account: Account | Mapping[str, Any],
    env: Mapping[str, str],
    master: InstrumentMaster,
    options: Mapping[str, Any],
) -> str:
    """The one JSON line ``runner sim`` prints first (with ``--master-out``, writes the master file that
    ``account.instruments`` then names)."""
    from runner.accounts import Account
    from runner.wirejson import dumps

    body: dict[str, Any] = (
        account.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        if isinstance(account, Account) else dict(account)
    )
    body.pop("name", None)  # the accounts file keys entries by name
    body["broker"] = broker
    if options.get("master_out"):
        body["instruments"] = str(write_master(master, master_path(options, broker, port)))
    # The simulator trades at any hour: `runner run` without --ignore-calendar works too.
    body.setdefault("enforce_calendar", False)
    return str(dumps({"broker": broker, "url": url, "port": port, "account": body, "env": dict(env)}))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "log_file", None):
        from runner.commands.arguments import configure_logging

        configure_logging(args, progress=False)

    from runner.brokers.faults import FaultPlan

    try:
        faults = FaultPlan.parse(args.faults)
    except ValueError as exc:
        raise CommandError(EXIT_USAGE, f"--faults: {exc}") from None
    module = importlib.import_module(f"runner.brokers.{args.broker}.sim")
    options: dict[str, Any] = {"seed": args.seed}
    if args.master_out:
        options["master_out"] = args.master_out
    from runner.brokers import sim_loop

    # A port in use or an unbindable host is an OSError: exit 5 via runner.cli.
    try:
        with contextlib.suppress(KeyboardInterrupt):
            sim_loop.run(module.serve_forever(args.host, args.port, faults, options),
                         sim_loop.SimLoop(getattr(args, "loop", "auto")))
    except LookupError as exc:
        raise CommandError(EXIT_BROKER, f"--loop: {exc}") from None
    return EXIT_OK
