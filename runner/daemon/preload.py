"""What a daemon's first fire would import or build, done once at start (issue 16).

The fire path imports the engine and the HTTP transport lazily and builds the process's TLS context on
the first login. Each daemon process paid that (~0.3 s of CPU) inside its first instant's lead time, so
3 daemons paid it 3 times where the fires were being prepared. At start, in a worker thread, it is off
the lead time of any instant and out of the event loop's way.
"""

from __future__ import annotations

import importlib

FIRE_PATH = ("runner.engine.core",)  # imported by EngineExecutor.prepare on the first fire


def preload() -> None:
    from runner.brokers.http import preload as preload_http

    for name in FIRE_PATH:
        importlib.import_module(name)
    preload_http()
