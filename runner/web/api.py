"""The JSON behind the pages: ``/api/status`` is exactly ``runner status --json`` (one builder,
:func:`runner.web.snapshot.build_status`), ``/api/runs/RUN`` exactly ``runner show RUN --json``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Engine

from runner.web.snapshot import build_status


def status(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    return build_status(engine, now)


def run_detail(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """``runner show``'s view of one run (None: no such run)."""
    from runner.commands.show import collect
    from runner.journal.store import Journal

    journal = Journal(engine=engine)
    if journal.get_run(run_id) is None:
        return None
    return collect(journal, run_id)
