"""A log line costs what it must: rendered once, scrubbed once, and byte for byte what structlog's stock
TimeStamper(fmt="iso", utc=True) and JSONRenderer(sort_keys=True) wrote (a daemon writes ~5 lines per
fire, 1,000 fires at one instant)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog
import time_machine

from runner import logs, scrub

TOKEN = "session-token-abcdef0123456789"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    scrub.reset()
    yield
    scrub.reset()


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    was, saved = structlog.is_configured(), structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers[:] = []  # an earlier test's handler on stderr would write the stdlib line again
    monkeypatch.setattr(logs, "_configured", logs._configured)
    monkeypatch.setattr(logs, "_handler", None)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    if was:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


class Thing:
    def __repr__(self) -> str:
        return "Thing<1>"


class Structured:
    def __structlog__(self) -> dict[str, int]:
        return {"n": 1}


EVENTS: list[dict[str, Any]] = [
    {"event": "order_send", "run": "r-1", "quantity": 75, "price": Decimal("24500.05"), "side": "BUY"},
    {"event": "ünïcode ✓", "nested": {"b": [1, 2.5, None, True], "a": 'x\ny"z'}, "when": dt.date(2026, 1, 2)},
    {"event": "objects", "thing": Thing(), "s": Structured(), "t": (1, "2")},
]


@pytest.mark.parametrize("event", EVENTS)
def test_lines_render_as_the_stock_json_renderer_did(event: dict[str, Any]) -> None:
    stock = structlog.processors.JSONRenderer(sort_keys=True)
    assert logs._render_json(None, "info", dict(event)) == stock(None, "info", dict(event))


@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2026, 12, 6, 9, 15, 0, 0, tzinfo=dt.UTC),  # no microseconds: isoformat leaves them out
        dt.datetime(2026, 12, 6, 9, 15, 0, 7, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 1, 5, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    ],
)
def test_timestamps_are_the_stock_iso_utc_ones(now: dt.datetime) -> None:
    stock = structlog.processors.TimeStamper(fmt="iso", utc=True)
    with time_machine.travel(now, tick=False):
        ours = logs._timestamp(None, "info", {})["timestamp"]
        assert ours == stock(None, "info", {})["timestamp"]
    with time_machine.travel(now + dt.timedelta(seconds=1), tick=False):  # the next second: not cached
        assert logs._timestamp(None, "info", {})["timestamp"] == stock(None, "info", {})["timestamp"]


def test_a_line_to_a_commands_stderr_is_scrubbed_once_and_still_scrubbed(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI command's stderr is a ScrubbingStream; the logging tail scrubbed the line already."""
    calls = 0
    real = scrub.scrub

    def counting(text: str) -> str:
        nonlocal calls
        calls += 1
        return real(text)

    monkeypatch.setattr(scrub, "scrub", counting)
    monkeypatch.setattr(logs, "scrub", counting)
    scrub.secret(TOKEN)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", scrub.ScrubbingStream(err))
    logs.configure(json=True, force=True)
    logs.get_logger(run="r-1").info("order_send", note=f"token {TOKEN}")
    logging.getLogger("runner.scheduler").info("fire %s: %s", "pb", TOKEN)
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert TOKEN not in err.getvalue() and all("***" in line for line in lines)
    assert calls == 2  # one per line


def _records() -> list[logging.LogRecord]:
    make = logging.getLogger("runner.scheduler").makeRecord
    try:
        raise ValueError(f"broker said {TOKEN}")
    except ValueError:
        exc = sys.exc_info()
    plain = make("runner.scheduler", logging.INFO, "x.py", 1, "fire %s run %s: %s", ("pb", "r-1", "ok"), None)
    failed = make("runner.halt", logging.ERROR, "x.py", 2, "halt failed: %r", ({"k": 1},), exc)
    stacked = make(
        "runner.db", logging.WARNING, "x.py", 3, "plain text %d%%", (5,), None, sinfo="Stack:\n  x"
    )
    return [plain, failed, stacked]


@pytest.mark.parametrize("json_lines", [True, False])
def test_stdlib_records_format_as_the_stock_processor_formatter_did(json_lines: bool) -> None:
    scrub.secret(TOKEN)
    renderer: Any = logs._render_json if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    chain = [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name]
    tail = [structlog.processors.format_exc_info, logs.redact_processor, renderer, logs._scrub_rendered]
    processors = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail]
    ours = logs._RecordFormatter(foreign_pre_chain=chain, processors=processors)
    stock = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=chain, processors=processors)
    for record in _records():
        before = dict(record.__dict__)
        line = ours.format(record)
        assert record.__dict__ == before  # read, never changed (other handlers see it as it was)
        assert line == stock.format(record)
        assert TOKEN not in line
