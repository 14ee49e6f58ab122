"""Process-wide registry of secret *values*, scrubbed from every text that leaves the process.

Key-name redaction (:func:`runner.logs.redact`) cannot see a secret inside free text: an exception
message, a traceback, a broker's error echo. So every resolved credential (:mod:`runner.accounts`) and
every session token an adapter obtains at login (:func:`secret`) is registered here, and the sinks pass
their text through :func:`scrub`: the log renderer (after exception formatting), the journal's text
columns (:class:`runner.journal.db.ScrubbedText`), the CLI's stdout and stderr, and later alerts.

One compiled regex (the trie of the values' first characters, each hit confirmed against the whole
values), rebuilt only when the set changes; with nothing registered (the paper broker) :func:`scrub` is
one global read.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TextIO

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
# (one regex finding where any value's first PREFIX characters occur, prefix -> values longest first)
_state: tuple[re.Pattern[str], dict[str, list[str]]] | None = None
# The regex holds only each value's first characters (its prefix trie), and a hit is confirmed against
# the whole values: a daemon logging in 100 accounts recompiles a few kB, not every token in full
# (compiling the full trie per login was quadratic: ~46 s for 100 logins under a profiler).
PREFIX = MIN_LENGTH


def register(value: str | None, *, credential: bool = True) -> None:
    """Scrub ``value`` (as it is, JSON-escaped and URL-quoted) from now on. Values shorter than
    :data:`MIN_LENGTH` are ignored; ``credential=False`` (a session token) may be dropped once
    :data:`MAX_TOKENS` newer tokens were registered."""
    global _state
    if not value or len(value) < MIN_LENGTH:
        return
    from urllib.parse import quote  # here, not at import: every CLI command imports this module

    # as JSON text escapes it (the renderer, call rows) and as a URL carries it (an httpx error names its URL)
    forms = {value, json.dumps(value)[1:-1], quote(value, safe="")}
    with _lock:
        if all(f in _values for f in forms):
            return
        for f in forms:
            _values[f] = credential or _values.get(f, False)
            _values.move_to_end(f)
        tokens = [f for f, kept in _values.items() if not kept]
        for f in tokens[: max(0, len(tokens) - MAX_TOKENS)]:
            del _values[f]
        by_prefix: dict[str, list[str]] = {}
        for f in _values:
            by_prefix.setdefault(f[:PREFIX], []).append(f)
        for candidates in by_prefix.values():
            candidates.sort(key=len, reverse=True)  # the longest value at a position is scrubbed whole
        _state = (re.compile(_trie_pattern(by_prefix)), by_prefix)


def secret(value: str) -> str:
    """``value``, registered as a session token: for adapters at the point they receive one
    (``self._token = secret(str(token))``)."""
    register(value, credential=False)
    return value


def _trie_pattern(values: Iterable[str]) -> str:
    """One regex for all values, shaped as their prefix trie: at each position of a text only the
    branches of its first character are tried (a flat ``a|b|c`` alternation tries every value, ~1 us per
    value per 200 characters)."""
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for ch in value:
            node = node.setdefault(ch, {})
        node[_END] = True
    return _branch(trie)


_END = ""  # trie key marking the end of a value (never a character of one)


def _branch(node: dict[str, Any]) -> str:
    out = []
    while True:  # single-child chains as plain literals: recursion only at branch points
        keys = [k for k in node if k != _END]
        if len(keys) == 1 and _END not in node:
            out.append(re.escape(keys[0]))
            node = node[keys[0]]
            continue
        break
    if keys:
        group = "(?:" + "|".join(re.escape(k) + _branch(node[k]) for k in sorted(keys)) + ")"
        out.append(group + "?" if _END in node else group)
    return "".join(out)


def scrub(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    state = _state
    if state is None or not text:
        return text
    pattern, by_prefix = state
    m = pattern.search(text)
    if m is None:
        return text
    out: list[str] = []
    done = 0
    while m is not None:
        start = m.start()
        for value in by_prefix[m.group()]:
            if text.startswith(value, start):
                out.append(text[done:start])
                out.append(REDACTED)
                done = start + len(value)
                m = pattern.search(text, done)
                break
        else:  # a prefix that is no value here: a value may still start inside it
            m = pattern.search(text, start + 1)
    out.append(text[done:])
    return "".join(out)


def reset() -> None:
    """Forget every value (tests)."""
    global _state
    with _lock:
        _values.clear()
        _state = None


class ScrubbingStream:
    """A text stream that scrubs what is written to the stream it wraps (the CLI's stdout/stderr). Each
    write is scrubbed on its own: ``print`` writes whole strings; nothing here streams text in chunks."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        return self._inner.write(scrub(text))

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._inner, name)
