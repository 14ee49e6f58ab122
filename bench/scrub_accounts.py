"""scrub() cost per log line as logged-in accounts grow (issue 16: hundreds of registered values at a
1,000-fire instant), Aho-Corasick levels (runner/scrub.py) against the regex prefix-trie levels it
replaced (bench/scrub_regex_baseline.py) and a plain baseline (``str.replace`` of every value), same
process, same values.

Each account registers 2 credentials and 3 session tokens (each as is, JSON-escaped and URL-quoted).
Reported per account count (0, 100, 1,000): registering them all (ms, one at a time as logins do),
then us per log line, a daemon's ~420-character ``order_send`` JSON line without a secret (the
common case) and one with a token in it. Aho-Corasick is measured twice: right after the logins
(levels of doubling size, one search each) and compacted into one automaton, as it is once
``COMPACT_AFTER`` lines were scrubbed without a registration (the instant; compaction's one-off cost
is printed too).

    python bench/scrub_accounts.py [--accounts 0 100 1000] [--lines 20000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scrub_regex_baseline

from runner import scrub

LINE = json.dumps(
    {
        "account": "kotak-acct-042",
        "broker": "kotak_neo",
        "client_order_id": "rn3k2j4h5g6f7d8s9a",
        "event": "order_send",
        "level": "info",
        "logger": "runner",
        "order_type": "LIMIT",
        "playbook": "nifty-eod-square-off-0421",
        "price": "24500.05",
        "quantity": 75,
        "run": "20261206-091500-abcdefgh",
        "side": "SELL",
        "step": "flatten",
        "timestamp": "2026-12-06T09:15:00.000123Z",
        "attempt": 1,
        "broker_order_id": "261206000123456",
    },
    sort_keys=True,
)


def account_values(i: int) -> list[tuple[str, bool]]:
    """(value, credential) registered for one logged-in account."""
    return [
        (f"ck-{i:04d}-{secrets.token_urlsafe(18)}", True),  # consumer key
        (f"{secrets.token_urlsafe(12)}/{i:04d}+{secrets.token_hex(6)}==", True),  # a secret with / + =
        ("eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(60) + "." + secrets.token_urlsafe(24), False),
        (secrets.token_hex(16), False),  # sid
        (f"hs-{secrets.token_hex(10)}", False),
    ]


def per_call_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return min(best)  # the least disturbed round (the machine is shared)


def register_all(mod: ModuleType, values: list[tuple[str, bool]]) -> float:
    mod.reset()
    t0 = time.perf_counter()
    for v, credential in values:
        mod.register(v, credential=credential)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--lines", type=int, default=20000, help="scrub() calls per round (default 20000)")
    args = ap.parse_args()
    scrub.COMPACT_AFTER = 1 << 60  # levels stay levels while they are measured; compacted explicitly
    print(f"per log line of {len(LINE)} characters; 'hit' lines carry one session token")
    cols = f"{'replace':>8} {'regex':>8} {'ac-lvls':>8} {'ac-one':>8}"
    head = f"{'accounts':>8} {'values':>6} | {'register ms':>21}"
    print(f"{head} | {'clean line us':>35} | {'hit line us':>35}")
    print(f"{'':>8} {'':>6} | {'regex':>10} {'aho-cor.':>10} | {cols} | {cols}")
    for accounts in args.accounts:
        values = [v for i in range(accounts) for v in account_values(i)]
        reg_old = register_all(scrub_regex_baseline, values)
        reg_new = register_all(scrub, values)
        forms = list(scrub._values)
        assert forms == list(scrub_regex_baseline._values)

        def replace_all(text: str, forms: list[str] = forms) -> str:
            for f in forms:
                if f in text:
                    text = text.replace(f, scrub.REDACTED)
            return text

        hit = LINE.replace("rn3k2j4h5g6f7d8s9a", values[-3][0]) if values else LINE
        levels = len(scrub._state or ())
        row: dict[tuple[str, int], float] = {}
        compact_ms = 0.0
        for stage in ("ac-lvls", "ac-one"):
            if stage == "ac-one":
                t0 = time.perf_counter()
                scrub._compact()
                compact_ms = (time.perf_counter() - t0) * 1000
            for k, text in enumerate((LINE, hit)):
                assert scrub.scrub(text) == scrub_regex_baseline.scrub(text) == replace_all(text)
                fns: dict[str, Callable[[str], str]] = {"ac": scrub.scrub}
                if stage == "ac-lvls":
                    fns = {"replace": replace_all, "regex": scrub_regex_baseline.scrub, "ac": scrub.scrub}
                for name, fn in fns.items():
                    row[(stage if name == "ac" else name, k)] = per_call_us(
                        lambda fn=fn, text=text: fn(text),  # type: ignore[misc]
                        args.lines,
                    )
        names = ("replace", "regex", "ac-lvls", "ac-one")
        cells = [" ".join(f"{row[(c, k)]:>8.2f}" for c in names) for k in (0, 1)]
        print(f"{accounts:>8} {len(forms):>6} | {reg_old:>10.1f} {reg_new:>10.1f} | {cells[0]} | {cells[1]}")
        if accounts:
            ratio = {(c, k): row[(c, k)] / row[("regex", k)] for c in names for k in (0, 1)}
            print(
                f"{'':>8} {'':>6} | aho-corasick/regex: register {reg_new / max(reg_old, 1e-9):.2f}, "
                f"clean line {ratio[('ac-one', 0)]:.2f} ({levels} levels: {ratio[('ac-lvls', 0)]:.2f}), "
                f"hit line {ratio[('ac-one', 1)]:.2f}; compaction once {compact_ms:.1f} ms"
            )


if __name__ == "__main__":
    main()
