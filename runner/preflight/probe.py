"""The checks that talk to an account's broker: credentials present here, a login proved by a read,
the instrument master loaded through the adapter, and every instrument of the due playbooks resolved
against it. Nothing is sent that could trade: the proof of session is a read of the open orders."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from runner.accounts import Account
from runner.brokers.descriptions import BrokerDescription, credential_problems
from runner.errors import AuthExpired, BrokerError, Rejected, Retryable
from runner.playbook.checks.doc import Doc
from runner.preflight.report import CheckName, Row, Status


def credentials_row(account: Account, desc: BrokerDescription) -> Row:
    creds = {k: ref.model_dump(exclude_none=True) for k, ref in account.credentials.items()}
    missing, unset = credential_problems(account.name, desc.kind, creds, account.options)
    if not missing and not unset:
        return Row(account.name, CheckName.CREDENTIALS, Status.OK, f"{len(creds)} configured and present")
    details = [f"{m.key}: not configured ({m.meaning})" for m in missing]
    details += [f"{m.key}: {m.unset}" for m in unset]
    action = []
    if missing:
        refs = ", ".join(f"{m.key}: {{env: ...}}" for m in missing)
        action.append(f"add to the account's credentials: {refs}")
    if unset:
        action.append("set on this host: " + ", ".join(str(m.ref) for m in unset))
    reason = f"{len(missing) + len(unset)} missing: " + ", ".join(m.key for m in (*missing, *unset))
    return Row(account.name, CheckName.CREDENTIALS, Status.FAIL, reason, "; ".join(action), details)


def refusal(exc: BaseException, desc: BrokerDescription) -> tuple[str, str, bool]:
    """(reason, what to do, unreachable) for a failed login or read."""
    code = getattr(exc, "code", None)
    if isinstance(exc, BrokerError) and code is not None and str(code) in desc.ip_refusal_codes:
        return (
            f"refused: this host's IP is not the account's registered static IP ({exc})",
            f"{desc.title} accepts sessions and orders only from the registered static IP: "
            "run runner check on the trading host, or register this IP with the broker",
            False,
        )
    if isinstance(exc, Retryable | OSError | TimeoutError):
        return f"cannot reach the broker: {exc}", "check endpoints, network and the broker's status", True
    if isinstance(exc, AuthExpired | Rejected):
        return f"login refused: {exc}", "check the credentials' values (and the TOTP clock)", False
    return f"login failed: {exc}", "see the message; RUNNER_DEBUG=1 for details", False


async def probe(
    account: Account, desc: BrokerDescription, docs: Sequence[Doc], broker_factory: Any,
    due: Sequence[tuple[str, Any, Any]] = (),
) -> list[Row]:
    """Login, master and instruments for one account. ``broker_factory(account)`` builds the adapter;
    ``due`` (label, Playbook, trading day) adds the rolling-instruments row."""
    from runner.brokers.base import InstrumentSource
    from runner.brokers.instruments import InstrumentMaster
    from runner.playbook.checks.master import Finding, check_against_master

    name = account.name
    rows: list[Row] = []
    try:
        broker = broker_factory(account)
    except Exception as exc:  # a bad endpoint, an unreadable master file: the adapter says which
        rows.append(Row(name, CheckName.LOGIN, Status.FAIL, f"cannot build the adapter: {exc}",
                        "fix the account entry (runner validate --accounts FILE)"))
        return rows
    try:
        try:
            await broker.connect()
            await broker.open_orders()  # a read proves the session (Kotak: from the registered IP)
        except Exception as exc:
            reason, action, unreachable = refusal(exc, desc)
            rows.append(Row(name, CheckName.LOGIN, Status.FAIL, reason, action, unreachable=unreachable))
            return rows
        rows.append(Row(name, CheckName.LOGIN, Status.OK, "logged in; session proved by a read"))
        master: InstrumentMaster | None = None
        try:
            if isinstance(broker, InstrumentSource):
                master = await broker.instrument_master()
            else:
                found = getattr(broker, "master", None)
                master = found if isinstance(found, InstrumentMaster) else None
        except Exception as exc:
            rows.append(Row(name, CheckName.MASTER, Status.FAIL, f"cannot load the instrument master: {exc}",
                            "sync it (runner instruments sync) or fix the account's instruments:"))
            return rows
        if master is None:
            rows.append(Row(name, CheckName.MASTER, Status.WARN, "the adapter has no instrument master",
                            "instruments are checked when each step runs"))
            return rows
        rows.append(Row(name, CheckName.MASTER, Status.OK, f"{len(master)} instruments"))
        problems = [p for doc in docs for p in check_against_master(doc, master)]
        failing = [p for p in problems if p.finding is not Finding.UNCHECKED]
        details = [f"{p.label}: {p.message}" for p in problems]
        if failing:
            kinds = sorted({p.finding.value for p in failing})
            first = failing[0]
            rows.append(Row(name, CheckName.INSTRUMENTS, Status.FAIL,
                            f"{len(failing)} problem(s) ({', '.join(kinds)}): {first.message}",
                            first.hint, details))
        else:
            count = sum(1 for doc in docs for _ in _specs(doc))
            status = Status.WARN if problems else Status.OK
            reason = f"{count} resolved" + (f", {len(problems)} known only at run time" if problems else "")
            rows.append(Row(name, CheckName.INSTRUMENTS, status, reason, "", details))
        if due:
            from runner.preflight.rolling import rolling_rows

            rows.extend(await rolling_rows(name, broker, master, due))
        return rows
    finally:
        with contextlib.suppress(Exception):
            await broker.close()


def _specs(doc: Doc) -> list[Any]:
    from runner.playbook.checks.master import instrument_specs

    return list(instrument_specs(doc))
