"""Registering session tokens stays cheap as they accumulate: a daemon logging in 100 accounts while it
prepares 1,000 fires registered ~400 tokens, and each registration recompiled one regex of every value
(quadratic: 16% of the daemon's CPU in bench/scaleout.py at the issue's shape, fires missed). The
matcher is built in levels of doubling size, so n values cost ~n log n patterns built."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import scrub


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    scrub.reset()
    yield
    scrub.reset()


def token(i: int) -> str:
    return f"tok{i:05d}-{i * 7919 % 100003:06d}-session"


def test_registering_many_tokens_builds_n_log_n_patterns_not_n_squared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled = 0
    real = scrub._automaton

    def counting(values: tuple[str, ...]) -> Any:
        nonlocal compiled
        compiled += len(values)
        return real(values)

    monkeypatch.setattr(scrub, "_automaton", counting)
    n = 1000
    for i in range(n):
        scrub.secret(token(i))
    # each token registers up to 3 forms (as is, JSON-escaped, URL-quoted: the same here), so a matcher
    # rebuilt per registration builds ~n^2/2 patterns; levels of doubling size build ~n log2 n
    assert compiled < 20 * n, compiled


def test_every_token_is_still_scrubbed_whichever_level_holds_it() -> None:
    tokens = [token(i) for i in range(700)]
    for t in tokens:
        scrub.secret(t)
    for t in (tokens[0], tokens[1], tokens[350], tokens[-2], tokens[-1]):
        assert scrub.scrub(f"sid={t}; next") == "sid=***; next"
    text = " ".join(tokens)
    assert scrub.scrub(text) == " ".join(["***"] * len(tokens))


def test_the_longest_value_at_a_position_wins_across_levels() -> None:
    short = "abcdefgh1234"
    scrub.secret(short)
    for i in range(300):  # pushes the short value down into an older level
        scrub.secret(token(i))
    longer = short + "-and-more-secret"
    scrub.secret(longer)  # the newest level
    assert scrub.scrub(f"x {longer} y") == "x *** y"
    assert scrub.scrub(f"x {short} y") == "x *** y"


def test_evicted_tokens_beyond_the_cap_are_forgotten_credentials_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scrub, "MAX_TOKENS", 50)
    scrub.register("a-credential-value-kept")
    for i in range(200):
        scrub.secret(token(i))
    assert scrub.scrub("a-credential-value-kept") == "***"
    assert scrub.scrub(token(199)) == "***"
    assert scrub.scrub(token(0)) == token(0)  # the oldest token was dropped


def reference(values: list[str], text: str) -> str:
    """Leftmost-longest, non-overlapping, by brute force."""
    out, i, done = [], 0, 0
    while i < len(text):
        hit = max((v for v in values if text.startswith(v, i)), key=len, default=None)
        if hit is None:
            i += 1
            continue
        out += [text[done:i], "***"]
        i = done = i + len(hit)
    return "".join([*out, text[done:]])


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.text("ab", min_size=8, max_size=12), min_size=1, max_size=12, unique=True),
    text=st.text("abx", max_size=60),
)
def test_matches_over_several_levels_are_the_leftmost_longest(values: list[str], text: str) -> None:
    # tiny levels: values overlapping each other land in different levels, and one level's own
    # non-overlapping matches can hide a later match once another level's longer value is scrubbed
    scrub.reset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scrub, "LEVEL_BASE", 1)
        for v in values:
            scrub.secret(v)
        assert len(scrub._state or ()) == bin(len(values)).count("1")  # a binary counter of levels
        assert scrub.scrub(text) == reference(values, text)
        assert scrub.scrub(" ".join(values)) == reference(values, " ".join(values))


def test_a_match_hidden_by_its_own_level_is_found_once_another_level_scrubbed_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scrub, "LEVEL_BASE", 1)
    text = "0123456789AB" + "CDEFGHIJKL"
    scrub.secret("BCDEFGHIJKL")  # [11, 22): this level's own match, hiding the next one
    scrub.secret("DEFGHIJK")  # [13, 21): same level, overlaps the one above
    scrub.secret("0123456789AB")  # [0, 12): the newest level, scrubbed first; 11 is past
    assert len(scrub._state or ()) == 2
    assert scrub.scrub(text) == "***C***L"


def test_levels_are_compacted_into_one_once_registrations_go_quiet() -> None:
    tokens = [token(i) for i in range(300)]
    for t in tokens:
        scrub.secret(t)
    assert len(scrub._state or ()) > 1
    for _ in range(scrub.COMPACT_AFTER - 1):
        assert scrub.scrub("a line without a secret") == "a line without a secret"
    assert len(scrub._state or ()) > 1
    assert scrub.scrub(f"sid={tokens[0]}") == "sid=***"  # the line that compacts is scrubbed too
    assert len(scrub._state or ()) == 1
    assert scrub.scrub(" ".join(tokens)) == " ".join(["***"] * len(tokens))
    scrub.secret("a-token-after-compaction")  # a level of its own again
    assert len(scrub._state or ()) == 2
    assert scrub.scrub(f"{tokens[-1]} a-token-after-compaction") == "*** ***"


def test_compactions_cost_at_most_twice_one_build_however_lines_and_logins_interleave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logins spread over a daemon's preparation, each followed by more than COMPACT_AFTER lines: a
    compaction after every login rebuilt everything each time (quadratic)."""
    built = 0
    real = scrub._automaton

    def counting(values: tuple[str, ...]) -> Any:
        nonlocal built
        built += len(values)
        return real(values)

    n = 600
    for i in range(n):
        if i == 64:  # past the first level: count from here
            monkeypatch.setattr(scrub, "_automaton", counting)
        scrub.secret(token(i))
        for _ in range(scrub.COMPACT_AFTER):
            scrub.scrub("a line without a secret")
    # levels of doubling size alone build ~n log2 n (~5,500 here); compactions add at most 2n
    assert built < 20 * n, built
    assert scrub.scrub(" ".join(token(i) for i in range(n))) == " ".join(["***"] * n)


def test_text_with_lone_surrogates_is_scrubbed_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """surrogateescape'd bytes (a file name, a broker's undecodable echo) reach the log lines: UTF-8
    cannot carry them, and the line must still be written, scrubbed."""
    scrub.secret("session-token-0123456789")
    text = "path /tmp/\udcff\udcfe x session-token-0123456789 \ud800 end"
    assert scrub.scrub(text) == "path /tmp/\udcff\udcfe x *** \ud800 end"
    monkeypatch.setattr(scrub, "LEVEL_BASE", 1)
    scrub.reset()
    scrub.secret("session-token-0123456789")
    scrub.secret("session-token-0123456789-longer")  # two levels: the merging path
    scrub.secret("another-token-abcdefgh")
    assert len(scrub._state or ()) == 2
    text = "\udcff another-token-abcdefgh \udcfe session-token-0123456789-longer."
    assert scrub.scrub(text) == "\udcff *** \udcfe ***."


def test_the_token_count_follows_tokens_turned_credentials_and_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrub, "MAX_TOKENS", 40)
    scrub.secret("token-then-credential-1")
    scrub.register("token-then-credential-1")  # resolved from the accounts file too: kept for good
    for i in range(120):
        scrub.secret(token(i))
        assert scrub._tokens == sum(not kept for kept in scrub._values.values())
    assert scrub.scrub("token-then-credential-1") == "***"
    assert scrub.scrub(token(119)) == "***"
    assert scrub.scrub(token(0)) == token(0)
