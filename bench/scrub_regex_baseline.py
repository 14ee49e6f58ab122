"""The regex-trie scrubber runner/scrub.py used before Aho-Corasick (levels of prefix-trie regexes, hits
confirmed against whole values): kept only as bench/scrub_accounts.py's same-process baseline."""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

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
# The regexes hold only each value's first PREFIX characters (its prefix trie), and a hit is confirmed
# against the whole values (``by_prefix``, complete). They come in levels of doubling size, like a
# binary counter: a registration compiles a small level and merges a full one into the next, so n
# values cost ~n log n prefixes compiled, not n^2/2 (a daemon logging in 100 accounts while preparing
# 1,000 fires spent 16% of its CPU recompiling one regex of everything per token).
PREFIX = MIN_LENGTH
LEVEL_BASE = 64  # prefixes the smallest level holds; level i holds up to LEVEL_BASE * 2**i


class _Level:
    __slots__ = ("pattern", "prefixes")

    def __init__(self, prefixes: frozenset[str]) -> None:
        self.prefixes = prefixes
        self.pattern = re.compile(_trie_pattern(sorted(prefixes)))


_levels: list[_Level | None] = []
# what scrub() reads, swapped whole: (the levels' regexes, prefix -> values longest first)
_state: tuple[tuple[re.Pattern[str], ...], dict[str, list[str]]] | None = None


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
        # dropped in chunks, so a daemon past the cap rebuilds once per MAX_TOKENS // 4 logins, not each
        if len(tokens) > MAX_TOKENS + MAX_TOKENS // 4:
            for f in tokens[: len(tokens) - MAX_TOKENS]:
                del _values[f]
            _levels.clear()
            by_prefix = _index(_values)
            _add(frozenset(by_prefix))
        else:
            known = _state[1] if _state is not None else {}
            by_prefix = {**known, **_index(f for f in forms if f[:PREFIX] not in known)}
            for f in forms:
                if f[:PREFIX] in known and f not in by_prefix[f[:PREFIX]]:
                    by_prefix[f[:PREFIX]] = sorted([*by_prefix[f[:PREFIX]], f], key=len, reverse=True)
            fresh = frozenset(p for p in by_prefix if p not in known)
            if fresh:
                _add(fresh)
        _state = (tuple(lv.pattern for lv in _levels if lv is not None), by_prefix)


def _index(values: Iterable[str]) -> dict[str, list[str]]:
    by_prefix: dict[str, list[str]] = {}
    for f in values:
        by_prefix.setdefault(f[:PREFIX], []).append(f)
    for candidates in by_prefix.values():
        candidates.sort(key=len, reverse=True)  # the longest value at a position is scrubbed whole
    return by_prefix


def _add(prefixes: frozenset[str]) -> None:
    """Carry ``prefixes`` up the levels: merge each full level on the way into them, settle in the first
    empty level they fit."""
    carry = set(prefixes)
    i = 0
    while True:
        if i == len(_levels):
            _levels.append(None)
        level = _levels[i]
        if level is None and len(carry) <= LEVEL_BASE << i:
            _levels[i] = _Level(frozenset(carry))
            return
        if level is not None:
            carry |= level.prefixes
            _levels[i] = None
        i += 1


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
    patterns, by_prefix = state
    m = _first(patterns, text, 0)
    if m is None:
        return text
    out: list[str] = []
    done = 0
    while m is not None:
        start = m.start()
        for value in by_prefix.get(m.group(), ()):
            if text.startswith(value, start):
                out.append(text[done:start])
                out.append(REDACTED)
                done = start + len(value)
                m = _first(patterns, text, done)
                break
        else:  # a prefix that is no value here: a value may still start inside it
            m = _first(patterns, text, start + 1)
    out.append(text[done:])
    return "".join(out)


def _first(patterns: tuple[re.Pattern[str], ...], text: str, pos: int) -> re.Match[str] | None:
    """The earliest prefix hit of any level (all prefixes are PREFIX long: one string per position)."""
    best = None
    for pattern in patterns:
        m = pattern.search(text, pos)
        if m is not None and (best is None or m.start() < best.start()):
            best = m
    return best


def reset() -> None:
    """Forget every value (tests)."""
    global _state
    with _lock:
        _values.clear()
        _levels.clear()
        _state = None


