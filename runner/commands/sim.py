"""``runner sim BROKER``: start a loopback simulator speaking that broker's wire format.

Each simulator module ``runner/sims/<broker>.py`` exposes ``async def serve_forever(host, port, faults,
options) -> None`` and is backed by the paper matching engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys

SIMS = ("blitz", "kotak_neo", "alphapoint", "odin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("broker", choices=SIMS, help="which broker's wire format to speak")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one and print it)")
    parser.add_argument("--faults", default="", help="fault spec, e.g. 'latency=5ms,drop=0.05,seed=7' "
                        "(see runner/sims/faults.py)")
    parser.add_argument("--seed", type=int, default=0, help="price-path seed for the paper engine")


def run(args: argparse.Namespace) -> int:
    from runner.sims.faults import FaultPlan

    try:
        faults = FaultPlan.parse(args.faults)
    except ValueError as exc:
        print(f"runner sim: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"runner.sims.{args.broker}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(module.serve_forever(args.host, args.port, faults, {"seed": args.seed}))
    return 0
