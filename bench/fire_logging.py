"""Per-fire logging cost of a daemon at the instant (issue 16): the ~5 JSON lines each fire writes
(run_start, order_send, step_finish, run_finish from the engine's bound structlog logger; "fire ...
succeeded" from the scheduler's stdlib logger), rendered, redacted and scrubbed with 100 accounts'
secrets registered, to stderr as ``runner serve`` has it (the CLI's ScrubbingStream over a file).

Baseline, same process: the previous configuration (structlog's TimeStamper and JSONRenderer, the line
scrubbed again by the CLI's ScrubbingStream on stderr).

    python bench/fire_logging.py [--fires 5000] [--accounts 100]
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from runner import logs, scrub

SCHEDULER = logging.getLogger("runner.scheduler")


def fire(i: int) -> None:
    """One fire's lines, as the engine and the scheduler write them."""
    run = f"20261206-091500+0530-{i:08d}"
    log = logs.get_logger(run=run, playbook=f"pb-{i:04d}", account=f"acct-{i % 100:03d}")
    log.info("run_start", resumed=False, starts=1, armed=True)
    cid = f"rn{i:016d}"
    log.info("order_send", client_order_id=cid, side="BUY", quantity=75, instrument="NSE:RELIANCE",
             order_type="MARKET")  # fmt: skip
    log.info("step_finish", step="buy", outcome="succeeded", message=f"BUY 75 NSE RELIANCE filled ({cid})")
    log.info("run_finish", status="succeeded")
    SCHEDULER.log(logging.INFO, "fire %s run %s: %s %s", f"pb-{i:04d}", run, "succeeded", "")


class _LegacyStderr:
    """The previous logs._Stderr: through whatever sys.stderr is (a command's ScrubbingStream)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


def legacy_configure() -> None:
    """The configuration before this change, built from the same parts."""
    handler = logging.StreamHandler(_LegacyStderr())  # type: ignore[arg-type]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    tail = [
        structlog.processors.format_exc_info,
        logs.redact_processor,
        structlog.processors.JSONRenderer(sort_keys=True),
        logs._scrub_rendered,
    ]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=lambda name="runner", *_: logs._HandlerLogger(handler, name),
        cache_logger_on_first_use=False,
    )


def current_configure() -> None:
    logging.getLogger().handlers[:] = []
    logs.configure(json=True, force=True)  # on stderr: logs._Stderr


def per_fire_us(configure: Callable[[], None], fires: int, rounds: int = 5) -> float:
    configure()
    for i in range(200):  # warm
        fire(i)
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(fires):
            fire(i)
        best.append((time.perf_counter() - t0) / fires * 1e6)
    return min(best)  # the least disturbed round (the machine is shared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fires", type=int, default=5000)
    ap.add_argument("--accounts", type=int, default=100)
    args = ap.parse_args()
    for i in range(args.accounts):  # 2 credentials and 3 session tokens each, as bench/scrub_accounts.py
        scrub.register(f"ck-{i:04d}-{secrets.token_urlsafe(18)}")
        scrub.register(f"{secrets.token_urlsafe(12)}/{i:04d}+{secrets.token_hex(6)}==")
        scrub.secret("eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(60) + "." + secrets.token_urlsafe(24))
        scrub.secret(secrets.token_hex(16))
        scrub.secret(f"hs-{secrets.token_hex(10)}")
    scrub._compact()  # as after the logins (COMPACT_AFTER quiet lines)
    real_stderr = sys.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".log") as sink:
        sys.stderr = scrub.ScrubbingStream(sink)  # type: ignore[assignment]  # as cli.main sets it
        try:
            results: dict[str, Any] = {}
            for name, configure in (("previous", legacy_configure), ("current", current_configure)) * 2:
                us = per_fire_us(configure, args.fires)
                results[name] = min(us, results.get(name, us))
        finally:
            sys.stderr = real_stderr
            logging.getLogger().handlers[:] = []
        lines = len(Path(sink.name).read_text().splitlines())
    print(f"per-fire logging (5 JSON lines), {args.accounts} accounts' secrets registered, stderr to a file")
    print(f"  previous configuration: {results['previous']:7.1f} us per fire")
    print(f"  current configuration:  {results['current']:7.1f} us per fire")
    print(f"  ratio current/previous: {results['current'] / results['previous']:.2f} ({lines} lines written)")


if __name__ == "__main__":
    main()
