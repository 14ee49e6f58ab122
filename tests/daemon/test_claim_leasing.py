"""The holder's local lease check (issue 16): deadlines before the database's expiry, skew injected."""

from __future__ import annotations

import pytest

from runner.daemon.leasing import SKEW_ENV, LeaseBook


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_holder_stops_sending_a_margin_before_the_lease_lapses() -> None:
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    book.granted(["f"], book.stamp())
    mono.t += 0.69
    assert book.sendable("f")
    mono.t += 0.02  # 0.71 s after the write began: within the margin of the 1 s lease
    assert not book.sendable("f")


def test_renewal_extends_and_a_lost_renewal_forbids() -> None:
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    book.granted(["f", "g"], book.stamp())
    mono.t += 0.5
    book.granted(["f"], book.stamp())
    book.lost("g")
    mono.t += 0.5
    assert book.sendable("f") and not book.sendable("g")
    assert book.pending() == ["f"]
    book.done("f")
    assert book.pending() == [] and book.sendable("f")  # no lease known: not this book's to refuse


def test_a_clock_skewed_ahead_refuses_earlier_and_one_behind_within_the_margin_is_still_safe() -> None:
    mono = Mono()
    ahead = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.2)
    behind = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=-0.25)
    for book in (ahead, behind):
        book.granted(["f"], book.stamp())
    mono.t += 0.55  # real time: 0.45 s before the database's expiry
    assert not ahead.sendable("f"), "a host reading 0.2 s ahead gives up 0.2 s early"
    assert behind.sendable("f")
    mono.t += 0.4  # real time: 0.05 s before the database's expiry
    assert not behind.sendable("f"), "a clock running 0.25 s slow over the lease stays inside the margin"


def test_the_injected_skew_reaches_the_local_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """RUNNER_LEASE_SKEW (what the real-process tests set) moves the check, not just both readings: a
    constant offset on stamp and check alike would cancel and the variable would test nothing."""
    monkeypatch.setenv(SKEW_ENV, "0.25")
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono)
    plain = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    for b in (book, plain):
        b.granted(["f"], b.stamp())
    mono.t += 0.5
    assert plain.sendable("f") and not book.sendable("f")


def test_a_renewal_before_the_loop_noted_the_claim_counts_and_a_missing_one_only_lapses() -> None:
    """The renewal thread renews what the journal says this daemon holds: a claim whose result the busy
    event loop has not handled yet is renewed too, and that renewal's stamp is kept when it is noted."""
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    claim_stamp = book.stamp()
    mono.t += 0.6
    book.renewed({"f"}, book.stamp())  # renewed while the loop was still busy
    mono.t += 0.3
    book.granted(["f"], claim_stamp)  # the loop notes the claim 0.9 s after its write began
    assert book.sendable("f")
    book.granted(["g"], book.stamp())
    book.renewed(set(), book.stamp())  # g not seen by this renewal (claimed after it looked): not lost
    assert book.sendable("g")
    mono.t += 0.71
    assert not book.sendable("g") and not book.sendable("f")
