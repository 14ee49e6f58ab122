"""The holder's local lease check (issue 16): deadlines before the database's expiry, skew injected."""

from __future__ import annotations

from runner.daemon.leasing import LeaseBook


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_holder_stops_sending_a_margin_before_the_lease_lapses() -> None:
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    book.granted(["f"], book.now())
    mono.t += 0.69
    assert book.sendable("f")
    mono.t += 0.02  # 0.71 s after the write began: within the margin of the 1 s lease
    assert not book.sendable("f")


def test_renewal_extends_and_a_lost_renewal_forbids() -> None:
    mono = Mono()
    book = LeaseBook(lease=1.0, margin=0.3, mono=mono, skew=0.0)
    book.granted(["f", "g"], book.now())
    mono.t += 0.5
    book.granted(["f"], book.now())
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
        book.granted(["f"], book.now())
    mono.t += 0.95  # real time: 0.05 s before the database's expiry
    # skew is relative to the local reading the deadline was taken from: a constant offset cancels;
    # what matters is drift over the lease, injected here as a jump of the local clock
    ahead.skew += 0.2
    behind.skew -= 0.25
    assert not ahead.sendable("f")
    assert not behind.sendable("f"), "a clock running 0.25 s slow over the lease stays inside the margin"
