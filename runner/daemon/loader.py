"""The playbook directory: scan, validate, and swap in what changed.

A scan (worker thread) stats every ``*.yaml``/``*.yml`` file and loads only those whose (mtime, size)
moved; applying it (event loop) swaps each valid new version in atomically, keeps the previous version
running when a file turns invalid, and unschedules deleted files. Scheduling itself is the caller's,
through the ``on_schedule`` / ``on_unschedule`` callbacks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.daemon.rules import Rule, build_rule, format_local, late_window
from runner.playbook.models import Playbook

log = logging.getLogger("runner.scheduler")

PLAYBOOK_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Loaded:
    path: Path
    version: str  # sha256 of the file content (first 16 hex)
    playbook: Playbook | None
    errors: tuple[str, ...] = ()


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def load_playbook_file(path: Path, accounts: Any = None) -> Loaded:
    """Read, validate (:mod:`runner.playbook.validate`: schema + semantics) and model one playbook file.
    ``accounts`` is :func:`runner.playbook.validate.account_names`' result; None skips the account check."""
    from runner.playbook.validate import playbook_from_report, validate_bytes

    try:
        data = path.read_bytes()
    except OSError as exc:
        return Loaded(path, "", None, (f"{path}: cannot read: {exc.strerror}",))
    version = content_version(data)
    report = validate_bytes(data, str(path), accounts)
    if not report.ok:
        return Loaded(path, version, None, tuple(d.format() for d in report.errors))
    try:
        playbook = playbook_from_report(report)
        if playbook.schedule is not None:
            build_rule(playbook.schedule, playbook.timezone)
            late_window(playbook.schedule)
    except ValueError as exc:
        return Loaded(path, version, None, (f"{path}: {exc}",))
    return Loaded(path, version, playbook)


@dataclass
class Entry:
    """A scheduled playbook: the version in force and where its schedule stands."""

    name: str
    path: Path
    version: str
    playbook: Playbook
    rule: Rule
    late: dt.timedelta | None
    next_fire: dt.datetime | None = None
    armed_for: dt.datetime | None = None  # latest instant a job was woken for (never re-arm <= this)

    @property
    def late_policy(self) -> str:
        """The ``late:`` text, for messages."""
        return self.playbook.schedule.late if self.playbook.schedule else "skip"


@dataclass
class FileState:
    stamp: tuple[int, int]  # (mtime_ns, size)
    version: str
    name: str | None  # playbook name when valid


Stamp = tuple[int, int]
Scan = dict[Path, tuple[Stamp, Loaded | None]]  # None: unchanged since the last scan


class PlaybookDirectory:
    def __init__(
        self,
        path: Path,
        account_names: Any,
        on_schedule: Callable[[Entry, Entry | None], None],
        on_unschedule: Callable[[Entry], None],
    ) -> None:
        self.path = path
        self.account_names = account_names  # runner.playbook.checks.doc.AccountNames; None skips the check
        self.on_schedule = on_schedule  # (new entry, the one it replaces): arm it
        self.on_unschedule = on_unschedule
        self.entries: dict[str, Entry] = {}
        self.files: dict[Path, FileState] = {}
        self.errors: dict[str, tuple[str, ...]] = {}  # file -> why it is invalid
        self._paths: dict[str, Path] = {}  # file name -> its path, built once

    async def reload(self) -> list[str]:
        """Apply the directory's current contents; returns human-readable change lines."""
        return self.apply(await asyncio.to_thread(self.scan))

    def scan(self) -> Scan:
        """Runs in a thread: stat every file, load only those whose (mtime, size) moved. ``os.scandir``
        and names, not ``Path`` objects: 3,000 files are scanned in a few ms."""
        seen: Scan = {}
        with os.scandir(self.path) as it:
            found = sorted((e.name, e) for e in it if os.path.splitext(e.name)[1] in PLAYBOOK_SUFFIXES)
        for name, dirent in found:
            try:
                if not dirent.is_file():
                    continue
                st = dirent.stat()
            except OSError:
                continue
            path = self._paths.get(name)
            if path is None:
                path = self._paths[name] = self.path / name
            stamp = (st.st_mtime_ns, st.st_size)
            known = self.files.get(path)
            if known is not None and known.stamp == stamp:
                seen[path] = (stamp, None)
                continue
            seen[path] = (stamp, load_playbook_file(path, self.account_names))
        return seen

    def apply(self, scanned: Scan) -> list[str]:
        changes: list[str] = []
        for path in list(self.files):
            if path not in scanned:
                state = self.files.pop(path)
                self.errors.pop(str(path), None)
                if state.name and (e := self.entries.get(state.name)) and e.path == path:
                    self.unschedule(state.name)
                    changes.append(f"{path.name}: deleted, {state.name} unscheduled")
                    log.info("playbook %s deleted: unscheduled", state.name)  # a deliberate change
        for path, (stamp, loaded) in scanned.items():
            if loaded is not None:
                changes += self._apply_file(path, stamp, loaded)
        return changes

    def _apply_file(self, path: Path, stamp: Stamp, loaded: Loaded) -> list[str]:
        known = self.files.get(path)
        if known is not None and known.version == loaded.version:
            known.stamp = stamp  # touched, same content
            return []
        current = known.name if known else None
        if loaded.playbook is None:
            self.files[path] = FileState(stamp, loaded.version, current)
            self.errors[str(path)] = loaded.errors
            kept = f"; keeping the previous version of {current}" if current in self.entries else ""
            log.error("playbook %s invalid%s: %s", path, kept, "; ".join(loaded.errors))
            return [f"{path.name}: invalid{kept}: " + "; ".join(loaded.errors)]
        pb = loaded.playbook
        owner = self.entries.get(pb.name)
        if owner is not None and owner.path != path:
            msg = f"{path.name}: playbook name {pb.name!r} already used by {owner.path.name}"
            self.files[path] = FileState(stamp, loaded.version, None)
            self.errors[str(path)] = (msg,)
            log.error("%s", msg)
            return [msg]
        if current and current != pb.name and current in self.entries:
            self.unschedule(current)  # renamed inside the file
        self.files[path] = FileState(stamp, loaded.version, pb.name)
        self.errors.pop(str(path), None)
        if pb.schedule is None:
            log.info("playbook %s has no schedule: not scheduled", pb.name)
            self.unschedule(pb.name)
            return [f"{path.name}: {pb.name} has no schedule; not scheduled"]
        rule = build_rule(pb.schedule, pb.timezone)
        entry = Entry(pb.name, path, loaded.version, pb, rule, late_window(pb.schedule))
        if owner is not None:
            entry.armed_for = owner.armed_for
        self.entries[pb.name] = entry  # atomic swap: a job looks its entry up when it wakes
        self.on_schedule(entry, owner)
        verb = "reloaded" if owner is not None else "scheduled"
        log.info("playbook %s %s version %s next %s", pb.name, verb, loaded.version,
                 format_local(entry.next_fire, pb.timezone))
        return [
            f"{path.name}: {pb.name} {verb} (version {loaded.version}), next "
            f"{format_local(entry.next_fire, pb.timezone)}"
        ]

    def unschedule(self, name: str) -> None:
        gone = self.entries.pop(name, None)
        if gone is not None:
            self.on_unschedule(gone)
