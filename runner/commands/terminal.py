"""Terminal output: colours, tables, local times, live progress lines.

Cold start: imported for every ``runner <cmd> --help``, so nothing heavy at module level (no engine,
pydantic, sqlalchemy, asyncio); those come inside the functions that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from runner.engine.events import EngineEvent


_COLORS = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1", "cyan": "36"}
OUTCOME_COLOR = {
    "succeeded": "green",
    "failed": "red",
    "refused": "red",
    "timed_out": "yellow",
    "stopped": "yellow",
    "skipped": "dim",
    "running": "cyan",
}


def _columns(stream: TextIO) -> int:
    try:
        return int(os.environ.get("COLUMNS") or os.get_terminal_size(stream.fileno()).columns)
    except (OSError, ValueError, AttributeError):
        return 100


class Term:
    """How to write to one stream: ANSI colour only on a TTY without NO_COLOR / TERM=dumb, symbols only
    when the stream's encoding has them, and the width for truncating long lines (None: never)."""

    def __init__(self, stream: TextIO) -> None:
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.color = self.tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.width: int | None = _columns(stream) if self.tty else None
        try:
            "▶✔✘•".encode(getattr(stream, "encoding", None) or "ascii")
            self.unicode = True
        except (UnicodeEncodeError, LookupError):
            self.unicode = False

    def paint(self, text: str, color: str | None) -> str:
        if not self.color or not color or not text:
            return text
        return f"\x1b[{_COLORS[color]}m{text}\x1b[0m"

    def glyph(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain

    def fit(self, line: str, used: int = 0) -> str:
        """``line`` cut to the terminal width (``used``: columns already taken by invisible-free text)."""
        room = None if self.width is None else self.width - used
        if room is None or len(line) <= room or room < 10:
            return line
        return line[: room - 1] + self.glyph("…", "~")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO,
    *,
    indent: str = "",
    colors: Sequence[Callable[[str], str | None] | None] = (),
) -> None:
    """Left-aligned columns. Colour (per column, chosen by cell value) is applied after padding so ANSI
    codes never skew alignment. Nothing is cut: the last column may wrap, but it is the detail ops need."""
    term = Term(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    head = indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(term.paint(head.rstrip(), "bold"), file=out)
    for r in rows:
        cells = []
        for i, (c, w) in enumerate(zip(r, widths, strict=True)):
            pick = colors[i] if i < len(colors) else None
            cells.append(term.paint(c, pick(c) if pick else None) + " " * (w - len(c)))
        print((indent + "  ".join(cells)).rstrip(), file=out)


def local(at: dt.datetime | None, tz: ZoneInfo) -> str:
    """Time of day in ``tz``; the zone is named once, by the caller's heading (``timefmt.label``)."""
    from runner.timefmt import clock

    return clock(at, tz)


def progress_printer(
    tz: ZoneInfo, out: TextIO | None = None, *, orders: bool = True
) -> Callable[[EngineEvent], None]:
    """Live progress lines (stderr by default: stdout is for the result, possibly JSON)."""
    stream = out or sys.stderr
    term = Term(stream)
    start, ok, bad, other = (term.glyph(*g) for g in (("▶", ">"), ("✔", "+"), ("✘", "x"), ("•", "-")))

    def emit(t: str, text: str) -> None:
        print(f"{term.paint(t, 'dim')}  {term.fit(text, len(t) + 2)}", file=stream, flush=True)

    def show(e: EngineEvent) -> None:
        t = local(e.at, tz)
        if e.kind == "step_started":
            emit(t, f"{start} {e.step_id}: {e.message}")
        elif e.kind == "step_finished":
            outcome = e.outcome or "?"
            mark = ok if outcome == "succeeded" else bad if outcome in ("failed", "refused") else other
            color = OUTCOME_COLOR.get(outcome)
            line = term.fit(f"{e.step_id} {outcome}: {e.message}", len(t) + 4)
            head, _, rest = line.partition(" ")
            word, _, tail = rest.partition(":")
            print(
                f"{term.paint(t, 'dim')}  {term.paint(mark, color)} {head} {term.paint(word, color)}:{tail}",
                file=stream,
                flush=True,
            )
        elif e.kind == "order" and orders and e.order is not None:
            o = e.order
            status = o.status.value
            if o.filled_quantity and o.filled_quantity < o.quantity:
                status += f" {o.filled_quantity}/{o.quantity}"
            if o.filled_quantity and o.average_price is not None:
                status += f" @ {o.average_price}"
            emit(t, f"    {o.client_order_id}  {o.side.value} {o.quantity} {o.instrument.key}  {status}")
        elif e.kind == "note":
            emit(t, f"    note: {e.message}")
        elif e.kind in ("run_started", "run_finished"):
            emit(t, f"run {e.message}")

    return show


def wait_notice(tz: ZoneInfo, out: TextIO | None = None) -> Callable[[EngineEvent], None]:
    """Says what a step waits for and until when (its ``at:``, zone named): on a TTY a countdown rewritten
    in place each second until the next event; elsewhere one line, no spam. Real time: ``run``/``apply``."""
    import asyncio
    import datetime as dt

    from runner.timefmt import countdown, when

    stream = out or sys.stderr
    term = Term(stream)
    ticking: list[asyncio.Task[None]] = []

    def text(e: EngineEvent, now: dt.datetime) -> str:
        assert e.until is not None
        left = countdown((e.until - now).total_seconds())
        return f"waiting for step {e.step_id} ({e.message}): until {when(e.until, tz)}, in {left}"

    async def tick(e: EngineEvent) -> None:
        while True:
            line = term.fit(text(e, dt.datetime.now(dt.UTC)))
            print(f"\r\x1b[2K{term.paint(line, 'dim')}", end="", file=stream, flush=True)
            await asyncio.sleep(1)

    def stop() -> None:
        while ticking:
            ticking.pop().cancel()
            print("\r\x1b[2K", end="", file=stream, flush=True)  # the countdown line gives way

    def show(e: EngineEvent) -> None:
        stop()
        if e.kind != "waiting" or e.until is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if not term.tty or loop is None:
            print(text(e, e.at), file=stream, flush=True)
            return
        ticking.append(loop.create_task(tick(e)))

    return show


def with_wait_notice(
    observer: Callable[[EngineEvent], None] | None, tz: ZoneInfo, out: TextIO | None = None
) -> Callable[[EngineEvent], None]:
    """``observer`` (the progress lines, or none off a TTY) plus :func:`wait_notice`."""
    notice = wait_notice(tz, out)

    def both(e: EngineEvent) -> None:
        notice(e)  # first: a countdown line is cleared before the next progress line
        if observer is not None:
            observer(e)

    return both


def deduplicating(show: Callable[[EngineEvent], None]) -> Callable[[EngineEvent], None]:
    """Print an order line only when its status or fill changes (polling re-reads the same state)."""
    seen: dict[str, tuple[str, int]] = {}

    def inner(e: EngineEvent) -> None:
        if e.kind == "order" and e.order is not None:
            key = (e.order.status.value, e.order.filled_quantity)
            if seen.get(e.order.client_order_id) == key:
                return
            seen[e.order.client_order_id] = key
        show(e)

    return inner
