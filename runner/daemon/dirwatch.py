"""When the reload loop needs to scan the playbook directory (issue 16: a daemon's fixed cost).

Stat-ing 3,000 files every second cost an idle daemon most of its CPU. A scan now runs when something
says the directory may have changed: a filesystem event (``watchfiles``: inotify on Linux, so a file
rewritten in place, which leaves the directory's mtime alone, is seen at once), the directory's own
(mtime, inode) moving (a file added, removed or renamed in), or the backstop: a full scan every
:data:`FULL_SCAN_EVERY` seconds with a watcher, :data:`FULL_SCAN_UNWATCHED` without one (no
``watchfiles``, an inotify limit reached, a filesystem that sends no events).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("runner.scheduler")

FULL_SCAN_EVERY = 30.0  # seconds between full scans while a watcher reports events (a missed event)
FULL_SCAN_UNWATCHED = 5.0  # ... without one: an edit in place is seen within this
RACY_NS = 2_000_000_000  # a directory mtime this recent may yet move within its tick: not trusted
WATCH_STEP_MS = 250  # how often the watcher thread looks at its stop flag (takes the GIL briefly)


class DirectoryWatch:
    def __init__(
        self,
        path: Path,
        full_every: float = FULL_SCAN_EVERY,
        unwatched_every: float = FULL_SCAN_UNWATCHED,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.full_every = full_every
        self.unwatched_every = unwatched_every
        self.monotonic = monotonic
        self.watching = False  # a watcher thread is running and has not failed
        self._events = threading.Event()  # set by the watcher: something in the directory changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dir_stamp: tuple[int, int] | None = None
        self._last_scan: float | None = None

    def start(self) -> None:
        """Start the watcher thread (if ``watchfiles`` can watch the directory)."""
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            log.info("no watchfiles: the playbook directory is scanned every %gs", self.unwatched_every)
            return
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # not "1 change detected" at INFO
        self._stop.clear()
        self.watching = True
        self._thread = threading.Thread(target=self._watch, name="playbook-dir-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.watching = False

    def _watch(self) -> None:
        import watchfiles

        try:
            for _changes in watchfiles.watch(
                self.path,
                watch_filter=None,  # every change: a scan decides what is a playbook
                debounce=50,
                step=WATCH_STEP_MS,
                stop_event=self._stop,
                recursive=False,
                raise_interrupt=False,
            ):
                self._events.set()
        except Exception as exc:  # inotify limits, a vanished directory: the periodic scan carries on
            log.warning(
                "watching %s failed (%s: %s); scanning it every %gs instead",
                self.path, type(exc).__name__, exc, self.unwatched_every,
            )  # fmt: skip
        finally:
            self.watching = False
            self._events.set()  # one more scan: anything the watcher saw last is not lost

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def due(self) -> bool:
        """Whether the directory may have changed since the last :meth:`scanning` (one stat: cheap)."""
        if self._last_scan is None or self._events.is_set():
            return True
        if self._stamp() != self._dir_stamp:
            return True
        every = self.full_every if self.watching else self.unwatched_every
        return self.monotonic() - self._last_scan >= every

    def scanning(self) -> None:
        """A scan starts now: what changes from here on makes the next :meth:`due` true."""
        self._events.clear()
        stamp = self._stamp()
        # File times tick coarsely: a file added later in the tick the scan listed the directory in
        # leaves the mtime as recorded. A recent mtime is not trusted (the next look scans again).
        racy = stamp is not None and time.time_ns() - stamp[0] < RACY_NS
        self._dir_stamp = None if racy else stamp
        self._last_scan = self.monotonic()
