"""Registering session tokens stays cheap as they accumulate: a daemon logging in 100 accounts while it
prepares 1,000 fires registered ~400 tokens, and each registration recompiled one regex of every value
(quadratic: 16% of the daemon's CPU in bench/scaleout.py at the issue's shape, fires missed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from runner import scrub


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    scrub.reset()
    yield
    scrub.reset()


def token(i: int) -> str:
    return f"tok{i:05d}-{i * 7919 % 100003:06d}-session"


def test_registering_many_tokens_compiles_n_log_n_prefixes_not_n_squared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled = 0
    real = scrub._trie_pattern

    def counting(values: Iterable[str]) -> str:
        nonlocal compiled
        values = list(values)
        compiled += len(values)
        return real(values)

    monkeypatch.setattr(scrub, "_trie_pattern", counting)
    n = 1000
    for i in range(n):
        scrub.secret(token(i))
    # each token registers up to 3 forms (as is, JSON-escaped, URL-quoted: the same here), so a regex
    # rebuilt per registration compiles ~n^2/2 prefixes; levels of doubling size compile ~n log2 n
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
