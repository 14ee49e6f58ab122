"""``runner serve PLAYBOOK_DIR``: the daemon. Schedules every valid playbook in the directory (each in its
own timezone, on its calendar's trading days), fires each exactly once across daemons sharing the journal,
catches up on fires missed while down (per the playbook's ``late:`` policy, listed in a report), reloads
edited files (an invalid edit keeps the previous version), honours ``runner halt`` within a second and
stops gracefully on SIGTERM/SIGINT (running fires get ``--shutdown-grace`` seconds, then are journaled
unknown). ``runner status`` shows what it is doing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.alerts.watch import AlertWatch
    from runner.daemon.scheduler import Daemon

DESCRIPTION = __doc__
DEFAULT_LEAD = 1.5  # = DaemonOptions.lead (not imported: `runner --help` stays light; a test ties them)
EXAMPLES = """\
  runner serve playbooks/ --accounts accounts.yaml --db sqlite:////var/lib/runner/runner.db
  runner serve playbooks/ --shutdown-grace 30     # then `runner status` from another shell
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("playbook_dir", metavar="PLAYBOOK_DIR", help="directory of playbook YAML files")
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts file (default $RUNNER_ACCOUNTS, ./accounts.yaml)"
    )
    parser.add_argument(
        "--db", metavar="URL", help="journal database URL (default $RUNNER_DB or ./.runner/runner.db)"
    )
    parser.add_argument(
        "--calendars", metavar="DIR", help="calendar override directory (default $RUNNER_CALENDARS)"
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long running fires may finish after SIGTERM (default 10)",
    )
    parser.add_argument(
        "--lead",
        type=float,
        metavar="SECONDS",
        help=f"wake this early before each fire to connect, reconcile and arm it, then finish the wait "
        f"precisely (default {DEFAULT_LEAD:g}; more when many fires share an instant)",
    )
    parser.add_argument(
        "--standby-brokers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with several daemons on one PostgreSQL journal, log in ahead (no orders) to the accounts this "
        "daemon would take over if any one peer stopped, so their fires go out at once after a takeover "
        "(default on; --no-standby-brokers where a broker's static IP rule (one primary and one secondary "
        "IP per client) leaves no room for this host's session)",
    )
    from runner.alerts.setup import add_alerts_argument
    from runner.commands.arguments import add_log_file_argument

    add_alerts_argument(parser)
    add_log_file_argument(parser)
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the read-only status page, its JSON API (/api/status) and Prometheus /metrics "
        "there (off unless given; a non-loopback HOST needs a token)",
    )
    parser.add_argument(
        "--http-token-file",
        metavar="FILE",
        help="file holding the token every --http request must carry (Authorization: Bearer, or ?token= "
        "in a browser); default $RUNNER_HTTP_TOKEN",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from runner.cli import EXIT_INVALID, EXIT_USAGE
    from runner.commands.inputs import check_accounts_file

    directory = Path(args.playbook_dir)
    if not directory.is_dir():
        print(f"runner serve: {directory} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    check_accounts_file(args.accounts)  # every problem as file:line:col, exit 1, before anything starts
    http = None
    if args.http or args.http_token_file:
        from runner.web.auth import HttpConfigError, check_bind, load_token, parse_address

        try:
            if not args.http:
                raise HttpConfigError("--http-token-file needs --http HOST:PORT")
            host, port = parse_address(args.http)
            token = load_token(args.http_token_file)
            check_bind(host, token)
        except HttpConfigError as exc:
            print(f"runner serve: {exc}", file=sys.stderr)
            return EXIT_USAGE
        http = (host, port, token)
    args.http_settings = http
    from runner.alerts.setup import load_config

    load_config(args.alerts)  # an invalid alerts file: exit 1 before anything starts
    from runner.commands.arguments import configure_logging

    # one configuration: stdlib loggers (scheduler, kill switch, adapters) render like structlog events;
    # INFO and up on stderr (reloads, fires), or JSON lines into --log-file
    configure_logging(args, progress=False)
    try:
        return asyncio.run(_serve(args, directory))
    except _AccountsInvalid as exc:
        print(f"runner serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        logging.shutdown()


class _AccountsInvalid(Exception):
    pass


async def _serve(args: argparse.Namespace, directory: Path) -> int:
    import asyncio
    import signal

    from runner.accounts import find_accounts_file, load_accounts
    from runner.clock import SystemClock
    from runner.daemon.scheduler import (
        BrokerPool,
        Daemon,
        DaemonOptions,
        EngineExecutor,
        default_calendar_loader,
        new_daemon_id,
    )
    from runner.engine.killswitch import ControlStore
    from runner.journal.fires import FireStore, open_engine
    from runner.journal.store import Journal
    from runner.liveness import Heartbeat, ProcessIdentity, ProcessRegistry
    from runner.playbook.validate import account_names

    try:
        accounts = load_accounts(find_accounts_file(args.accounts))
    except Exception as exc:  # pydantic / YAML / OS errors: report, do not start half-configured
        raise _AccountsInvalid(f"accounts file: {exc}") from None
    names, _ = account_names(args.accounts)
    clock = SystemClock()
    engine = open_engine(args.db)
    pool = BrokerPool(accounts, None, clock=clock, engine=engine)
    daemon = Daemon(
        directory,
        fires=FireStore(engine, new_daemon_id()),
        control=ControlStore(engine),
        executor=EngineExecutor(pool, Journal(engine=engine), clock),
        clock=clock,
        calendars=default_calendar_loader(args.calendars),
        brokers=pool,
        relogin={n: (a.relogin_at, a.timezone) for n, a in accounts.items() if a.relogin_at},
        options=DaemonOptions(
            lead=DEFAULT_LEAD if args.lead is None else args.lead,
            shutdown_grace=args.shutdown_grace,
            standby_brokers=args.standby_brokers,
        ),
        account_names=names,
    )
    pool.view = daemon.watcher
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    # The runs this daemon executes name this process as their owner: a `run` on another host judges
    # them by this heartbeat (the daemons table's own heartbeat serves the fire sweep).
    web = None
    if args.http_settings is not None:
        from runner.web.server import build_app, start
        from runner.web.worker import PageWorker

        host, port, token = args.http_settings
        app = build_app(
            engine,
            daemon=daemon.owner,
            token=token,
            brokers={n: a.broker for n, a in accounts.items()},
            quiet=daemon.quiet.wait,
            worker=PageWorker(args.db, args.calendars),
        )
        web, bound = await start(app, host, port)
        shown = f"[{host}]" if ":" in host else host
        print(f"runner serve: status page on http://{shown}:{bound}/ (metrics on /metrics)", flush=True)
    from runner.alerts.setup import alerts_for

    try:
        with alerts_for(args.alerts, engine) as dispatcher:
            async with Heartbeat(ProcessRegistry(engine), ProcessIdentity.current(), "serve"):
                watch = None
                if dispatcher is not None:
                    from runner.alerts.watch import AlertWatch

                    dispatcher.hold_while(daemon.quiet.remaining)  # an alert never delays a fire

                    watch = AlertWatch(
                        dispatcher.config,
                        Journal(engine=engine),
                        clock,
                        lambda: list(daemon.entries.values()),
                        daemon.gate.calendar,
                        daemon.quiet.wait,
                    )
                return await _serve_until_stopped(daemon, watch)
    finally:
        await pool.aclose()  # also when the start failed; after a shutdown the pool is already empty
        if web is not None:
            await web.cleanup()


async def _serve_until_stopped(daemon: Daemon, watch: AlertWatch | None = None) -> int:
    import asyncio

    from runner.alerts import hooks

    lines = await daemon.start()  # also opens every named account's broker, not on a fire's path
    hooks.daemon_state(daemon.owner, True, f"{len(daemon.entries)} playbooks scheduled")
    tasks = (
        []
        if watch is None
        else [asyncio.ensure_future(watch.run()), asyncio.ensure_future(watch.heartbeat())]
    )
    print(
        f"runner serve: daemon {daemon.owner}, {len(daemon.entries)} playbooks scheduled, "
        f"{len(daemon.reload_errors)} invalid",
        flush=True,
    )
    for line in lines:
        print(f"  {line}", flush=True)
    from runner.daemon.upcoming import banner_line

    for entry in sorted(daemon.entries.values(), key=lambda e: e.name):
        print(f"  {banner_line(entry, daemon.upcoming(entry))}", flush=True)
    if daemon.catch_up_report:
        print("catch-up report:", flush=True)
        for item in daemon.catch_up_report:
            print(item.line(), flush=True)
    await daemon.wait_stopped()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    hooks.daemon_state(daemon.owner, False)
    print("runner serve: stopped", flush=True)
    return 0
