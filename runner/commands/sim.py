"""``runner sim BROKER``: start a loopback simulator speaking that broker's wire format.

Each simulator module ``runner/brokers/<broker>/sim.py`` exposes ``async def serve_forever(host, port, faults,
options) -> None`` and is backed by the paper matching engine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib

from runner.cli import EXIT_OK, EXIT_USAGE, CommandError

SIMS = ("blitz", "kotak_neo", "alphapoint", "odin")
EXAMPLES = """\
  runner sim blitz --port 9100
  runner sim kotak_neo --faults 'latency=5ms,drop=0.05,seed=7'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("broker", choices=SIMS, help="which broker's wire format to speak")
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
        "--seed", type=int, default=0, metavar="N", help="price-path seed for the paper engine"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from runner.brokers.faults import FaultPlan

    try:
        faults = FaultPlan.parse(args.faults)
    except ValueError as exc:
        raise CommandError(EXIT_USAGE, f"--faults: {exc}") from None
    module = importlib.import_module(f"runner.brokers.{args.broker}.sim")
    # A port in use or an unbindable host is an OSError: exit 5 via runner.cli.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(module.serve_forever(args.host, args.port, faults, {"seed": args.seed}))
    return EXIT_OK
