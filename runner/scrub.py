"""Process-wide registry of secret *values*, scrubbed from every text that leaves the process.

Key-name redaction (:func:`runner.logs.redact`) cannot see a secret inside free text: an exception
message, a traceback, a broker's error echo. So every resolved credential (:mod:`runner.accounts`) and
every session token an adapter obtains at login (:func:`secret`) is registered here, and the sinks pass
their text through :func:`scrub`: the log renderer (after exception formatting), the journal's text
columns (:class:`runner.journal.db.ScrubbedText`), the CLI's stdout and stderr, and later alerts.

Values are found by Aho-Corasick automata (``ahocorasick_rs``, leftmost-longest: the longest value at a
position is scrubbed whole), in levels of doubling size so that registering n values builds ~n log n
patterns; with nothing registered (the paper broker) :func:`scrub` is one global read.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any, TextIO

import ahocorasick_rs

REDACTED = "***"
# Shorter values are not scrubbed: a 4-6 character value (a PIN, a short user id) collides with prices,
# quantities and order ids, and scrubbing those would corrupt the journal's broker data and the logs.
# Such values still go through key-name redaction; they are also too short to be worth stealing alone.
MIN_LENGTH = 8
# Session tokens accumulate over a long-lived daemon (a re-login per account per day): the newest are
# kept. Credentials resolved from the accounts file are never dropped.
MAX_TOKENS = 4096

_lock = threading.Lock()
_values: OrderedDict[str, bool] = OrderedDict()  # form -> a credential (kept for good), oldest first
# The automata come in levels of doubling size, like a binary counter: a registration builds a small
# level and merges full ones into the next, so n values cost ~n log n patterns built, not n^2/2 (a
# daemon logging in 100 accounts while preparing 1,000 fires spent 16% of its CPU rebuilding one matcher
# of everything per token). A line is searched once per level (0.6 us + ~4 ns a character each), so once
# registrations go quiet (logins done: COMPACT_AFTER lines scrubbed since the last one) the levels are
# rebuilt as one (~5 us per value): a daemon logging in 100 accounts scrubs its lines at the instant with
# one search, not six. Only once the values doubled since the last compaction, so compactions cost at
# most twice one build of everything, however registrations and lines interleave.
LEVEL_BASE = 64  # values the smallest level holds; level i holds up to LEVEL_BASE * 2**i
COMPACT_AFTER = 512


class _Level:
    __slots__ = ("automaton", "values")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self.automaton = _automaton(values)


def _automaton(values: tuple[str, ...]) -> ahocorasick_rs.AhoCorasick:
    return ahocorasick_rs.AhoCorasick(
        values,
        matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST,
        store_patterns=False,  # only positions are needed
        # builds as fast as the default's noncontiguous NFA, searches ~1.5x faster; a DFA builds 10x slower
        implementation=ahocorasick_rs.Implementation.ContiguousNFA,
    )


_levels: list[_Level | None] = []
# what scrub() reads, swapped whole: the levels' automata, newest (smallest) first
_state: tuple[ahocorasick_rs.AhoCorasick, ...] | None = None
_quiet = 0  # lines scrubbed over several levels since the last registration or compaction
_compacted = 0  # values held at the last compaction (or rebuild of everything)
_tokens = 0  # forms in _values that are session tokens (counted: a scan of every value per login was O(n))


def register(value: str | None, *, credential: bool = True) -> None:
    """Scrub ``value`` (as it is, JSON-escaped and URL-quoted) from now on. Values shorter than
    :data:`MIN_LENGTH` are ignored; ``credential=False`` (a session token) may be dropped once
    :data:`MAX_TOKENS` newer tokens were registered."""
    global _quiet, _compacted, _tokens
    if not value or len(value) < MIN_LENGTH:
        return
    from urllib.parse import quote  # here, not at import: every CLI command imports this module

    # as JSON text escapes it (the renderer, call rows) and as a URL carries it (an httpx error names its URL)
    forms = {value, json.dumps(value)[1:-1], quote(value, safe="")}
    with _lock:
        fresh = [f for f in forms if f not in _values]
        for f in forms:
            was = _values.get(f)
            kept = credential or bool(was)
            _tokens += (was is None and not kept) - (was is False and kept)
            _values[f] = kept
            _values.move_to_end(f)
        # dropped in chunks, so a daemon past the cap rebuilds once per MAX_TOKENS // 4 logins, not each
        if _tokens > MAX_TOKENS + MAX_TOKENS // 4:
            tokens = [f for f, kept in _values.items() if not kept]
            for f in tokens[: len(tokens) - MAX_TOKENS]:
                del _values[f]
            _tokens = min(len(tokens), MAX_TOKENS)
            _levels.clear()
            _add(list(_values))
            _compacted = len(_values)
        elif fresh:
            _add(fresh)
        else:
            return
        _quiet = 0
        _publish()


def _publish() -> None:
    global _state
    _state = tuple(lv.automaton for lv in _levels if lv is not None)


def _compact() -> None:
    """The levels rebuilt as one if the values doubled since the last time, unless a registration is
    under way (then later)."""
    global _quiet, _compacted
    if not _lock.acquire(blocking=False):
        return
    try:
        _quiet = 0
        if sum(lv is not None for lv in _levels) > 1 and len(_values) >= 2 * _compacted:
            values = [v for lv in _levels if lv is not None for v in lv.values]
            _levels.clear()
            _add(values)
            _compacted = len(values)
            _publish()
    finally:
        _lock.release()


def _add(values: list[str]) -> None:
    """Carry ``values`` up the levels: merge each full level on the way into them, settle in the first
    empty level they fit."""
    carry = list(values)
    i = 0
    while True:
        if i == len(_levels):
            _levels.append(None)
        level = _levels[i]
        if level is None and len(carry) <= LEVEL_BASE << i:
            _levels[i] = _Level(tuple(carry))
            return
        if level is not None:
            carry.extend(level.values)
            _levels[i] = None
        i += 1


def secret(value: str) -> str:
    """``value``, registered as a session token: for adapters at the point they receive one
    (``self._token = secret(str(token))``)."""
    register(value, credential=False)
    return value


def scrub(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    global _quiet
    state = _state
    if state is None or len(text) < MIN_LENGTH:  # too short to hold a value (ids, statuses, prices)
        return text
    if len(state) > 1:
        _quiet += 1  # unlocked: a lost increment only delays compaction
        if _quiet >= COMPACT_AFTER:
            _compact()
    try:
        return _scrub(state, text, text)
    except UnicodeEncodeError:  # lone surrogates (surrogateescape'd bytes), which UTF-8 cannot carry:
        # searched as U+FFFD, one character for one, so the positions found are the text's own
        return _scrub(state, text, _SURROGATES.sub("\ufffd", text))


_SURROGATES = re.compile("[\ud800-\udfff]")


def _scrub(state: tuple[ahocorasick_rs.AhoCorasick, ...], text: str, search: str) -> str:
    """``text`` scrubbed of the values found in ``search`` (``text``, or it with the same length)."""
    hits: list[tuple[int, int, int]] | None = None
    for automaton in state:
        found = automaton.find_matches_as_indexes(search)
        if found:
            if hits is not None:  # values of two levels here: merged the slow way (rare)
                return _scrub_levels(state, text, search)
            hits = found
    if hits is None:
        return text
    # one level's leftmost-longest, non-overlapping matches: the answer as they are
    out: list[str] = []
    done = 0
    for _, start, end in hits:
        out.append(text[done:start])
        out.append(REDACTED)
        done = end
    out.append(text[done:])
    return "".join(out)


def _scrub_levels(state: tuple[ahocorasick_rs.AhoCorasick, ...], text: str, search: str) -> str:
    """The leftmost-longest matches over several levels: from each scrubbed value's end, the earliest
    match of any level (the longest there). A level is searched again from that end, as a match of
    its own that overlaps a value of another level may have hidden a later one."""
    out: list[str] = []
    done = 0
    while True:
        best: tuple[int, int] | None = None
        rest = search[done:]
        for automaton in state:
            found = automaton.find_matches_as_indexes(rest)
            if found:
                _, start, end = found[0]
                if best is None or start < best[0] or (start == best[0] and end > best[1]):
                    best = (start, end)
        if best is None:
            break
        out.append(text[done : done + best[0]])
        out.append(REDACTED)
        done += best[1]
    out.append(text[done:])
    return "".join(out)


def reset() -> None:
    """Forget every value (tests)."""
    global _state, _quiet, _compacted, _tokens
    with _lock:
        _values.clear()
        _levels.clear()
        _state = None
        _quiet = _compacted = _tokens = 0


class ScrubbingStream:
    """A text stream that scrubs what is written to the stream it wraps (the CLI's stdout/stderr). Each
    write is scrubbed on its own: ``print`` writes whole strings; nothing here streams text in chunks."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner  # for writers whose text is scrubbed already (runner.logs)

    def write(self, text: str) -> int:
        return self.inner.write(scrub(text))

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self.inner, name)
