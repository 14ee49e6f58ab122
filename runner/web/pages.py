"""The status page and the run page as server-rendered HTML: no external assets (machines may be offline),
inline CSS, readable without JavaScript; a few lines of inline JS reload the page. Every time is shown
with its zone. Input: the dicts of :mod:`runner.web.snapshot` and ``runner show``'s collect."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from runner.web.snapshot import local_text

REFRESH_SECONDS = 5

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.3em 0}th{background:#f4f4f4}
td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.banner{padding:.6em 1em;font-weight:bold;font-size:1.1em;margin:.5em 0}
.halt{background:#c62828;color:#fff}.ok{background:#e8f5e9}.muted{color:#777}
.succeeded,.filled{color:#2e7d32}.failed,.rejected,.missed,.unknown,.interrupted{color:#c62828;font-weight:bold}
.skipped,.cancelled{color:#777}.running,.open,.partially_filled,.pending_new{color:#1565c0}
"""

STATES = frozenset(
    [
        "succeeded",
        "filled",
        "failed",
        "rejected",
        "missed",
        "unknown",
        "interrupted",
        "skipped",
        "cancelled",
        "running",
        "open",
        "partially_filled",
        "pending_new",
    ]
)  # cells coloured by the CSS classes above

SCRIPT = f"""<script>
// refresh in place; without JavaScript the page is still complete (reload by hand)
setTimeout(function () {{ location.reload(); }}, {REFRESH_SECONDS * 1000});
</script>"""


EMPTY = '<td><span class="muted">-</span></td>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "none") -> str:
    """Cells are escaped unless given as ``Raw``; a state value gets its colour class. One flat loop:
    1,000 playbooks make ~10,000 cells per page."""
    out: list[str] = []
    append = out.append
    for row in rows:
        append("<tr>")
        for c in row:
            if c is None or c == "":
                append(EMPTY)
            elif isinstance(c, Raw):
                append(f"<td>{c}</td>")
            else:
                text = escape(str(c))
                append(f'<td><span class="{text}">{text}</span></td>' if c in STATES else f"<td>{text}</td>")
        append("</tr>")
    if not out:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(out)}</tbody></table>"


class Raw(str):
    """Already-escaped HTML."""


def _run_link(run_id: str | None) -> Raw | None:
    if not run_id:
        return None
    return Raw(f'<a href="run/{quote(run_id)}">{escape(run_id)}</a>')


def _utc(iso: str | None) -> str | None:
    return local_text(iso, None)


def document(title: str, body: str, refresh: bool = True) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{body}{SCRIPT if refresh else ''}</body></html>"
    )


def halt_banner(control: dict[str, Any]) -> str:
    if not control.get("halted"):
        return '<div class="banner ok" id="control">kill switch: normal (orders allowed)</div>'
    mode = "HALTED" if control["mode"] == "halt" else "REDUCE-ONLY"
    why = f": {escape(control['reason'])}" if control.get("reason") else ""
    by = escape(control.get("by") or "?")
    return (
        f'<div class="banner halt" id="halt-banner">{mode} since {escape(_utc(control.get("since")) or "?")} '
        f"by {by}{why} (`runner resume` lifts it)</div>"
    )


def render_status(data: dict[str, Any], daemon: str | None = None) -> str:
    parts = [f"<h1>runner status <span class=muted>as of {escape(_utc(data['now']) or '')}"]
    if daemon:
        parts.append(f", served by daemon {escape(daemon)}")
    parts.append("</span></h1>")
    parts.append(halt_banner(data["control"]))
    daemons = data["daemons"]
    parts.append("<h2>Daemons</h2>")
    parts.append(
        table(
            ("DAEMON", "HOST", "PID", "ALIVE", "HEARTBEAT", "PLAYBOOK DIR", "INVALID"),
            (
                (
                    d["daemon_id"],
                    d["host"],
                    d["pid"],
                    "yes" if d["alive"] else "NO",
                    _utc(d["heartbeat_at"]),
                    d["playbook_dir"],
                    ", ".join(d["invalid"]) or None,
                )
                for d in daemons
            ),
            "no daemon has run on this journal",
        )
    )
    parts.append("<h2>Playbooks</h2>")
    parts.append(
        table(
            (
                "PLAYBOOK",
                "NEXT FIRE (its zone)",
                "CALENDAR",
                "SKIPPED DAYS (next week)",
                "LAST FIRE",
                "OUTCOME",
                "RUN",
            ),
            (
                (
                    p["name"],
                    p["next_fire_local"] or ("none" if p["scheduled"] else "not scheduled"),
                    p["calendar"],
                    ", ".join(p["skipped_days"]) or None,
                    local_text(p["last"]["scheduled_for"], p["timezone"]) if p["last"] else None,
                    (p["last"]["state"] + (f": {p['last']['outcome']}" if p["last"]["outcome"] else ""))
                    if p["last"]
                    else None,
                    _run_link(p["last"]["run_id"]) if p["last"] else None,
                )
                for p in data["playbooks"]
            ),
            "no playbooks",
        )
    )
    zones = {p["name"]: p["timezone"] for p in data["playbooks"]}
    parts.append(f"<h2>Fires in the last 24 hours ({len(data['today_fires'])})</h2>")
    parts.append(
        table(
            ("SCHEDULED FOR", "PLAYBOOK", "STATE", "OUTCOME", "RUN"),
            (
                (
                    local_text(f["scheduled_for"], zones.get(f["playbook"])),
                    f["playbook"],
                    f["state"],
                    f["outcome"],
                    _run_link(f["run_id"]),
                )
                for f in data["today_fires"]
            ),
            "no fires in the last 24 hours",
        )
    )
    parts.append("<h2>Running now</h2>")
    parts.append(
        table(
            ("PLAYBOOK", "RUN", "STEP", "STEPS DONE", "STARTED"),
            (
                (
                    r["playbook"],
                    _run_link(r["run_id"]),
                    r.get("current_step"),
                    r.get("steps_done"),
                    local_text(r["started_at"], zones.get(r["playbook"])),
                )
                for r in data["running"]
            ),
            "nothing running",
        )
    )
    if data["dead_runs"]:
        parts.append("<h2>Dead runs (closed by the account's next run, apply or serve)</h2>")
        parts.append(
            table(
                ("PLAYBOOK", "RUN", "ACCOUNT", "WHY"),
                ((r["playbook"], _run_link(r["run_id"]), r["account"], r["why"]) for r in data["dead_runs"]),
            )
        )
    intents = data["intents"]
    parts.append(f"<h2>Live and unsettled orders ({len(intents)})</h2>")
    parts.append(
        table(
            (
                "ORDER",
                "ACCOUNT",
                "RUN",
                "STEP",
                "INSTRUMENT",
                "SIDE",
                "QTY",
                "TYPE",
                "PRICE",
                "STATUS",
                "FILLED",
                "UNSETTLED",
                "UPDATED",
            ),
            (
                (
                    i["client_order_id"],
                    i["account"],
                    _run_link(i["run_id"]),
                    i["step_id"],
                    i["instrument"],
                    i["side"],
                    i["quantity"],
                    i["order_type"],
                    i["price"],
                    i["status"],
                    i["filled_quantity"],
                    "UNSETTLED" if i["unsettled"] else None,
                    _utc(i["updated_at"]),
                )
                for i in intents
            ),
            "no working or unsettled orders",
        )
    )
    pos = data["positions"]
    parts.append('<h2 id="positions">Positions and P&amp;L per account</h2>')
    if pos["available"]:
        rows = (
            (r["account"], r["instrument"], r["net_quantity"], r.get("pnl") or "n/a") for r in pos["rows"]
        )
        parts.append(table(("ACCOUNT", "INSTRUMENT", "NET QTY", "P&L"), rows, "no positions"))
    else:
        parts.append(f'<p class="muted">{escape(pos["note"])}</p>')
    parts.append("<h2>Recent runs</h2>")
    parts.append(
        table(
            ("RUN", "PLAYBOOK", "ACCOUNT", "STATUS", "STARTED", "FINISHED", "MESSAGE"),
            (
                (
                    _run_link(r["run_id"]),
                    r["playbook"],
                    r["account"],
                    r["status"],
                    local_text(r["started_at"], r["timezone"]),
                    local_text(r["finished_at"], r["timezone"]),
                    r["message"],
                )
                for r in data["recent_runs"]
            ),
            "no runs journaled",
        )
    )
    parts.append("<h2>Calendars and masters</h2>")
    parts.append(
        table(
            ("CALENDAR", "COVERED UNTIL", "DAYS LEFT"),
            ((c["calendar"], c["valid_to"] or c.get("error"), c["days_left"]) for c in data["calendars"]),
            "no calendar in use",
        )
    )
    age = data["master_snapshot"]["age_seconds"]
    parts.append(
        f'<p id="master-age">instrument master snapshot age: '
        f"{escape(_age(age)) if age is not None else 'n/a'}</p>"
    )
    parts.append('<p class="muted"><a href="api/status">JSON</a> · <a href="metrics">metrics</a></p>')
    return document("runner status", "".join(parts))


def _age(seconds: int) -> str:
    return str(dt.timedelta(seconds=seconds))


def _pnl(pnl: dict[str, Any] | None) -> str:
    """The run's realised P&L from its own fills that net (n/a, never 0, where it cannot be computed)."""
    if not pnl:
        return '<p class="muted">n/a</p>'
    head = f"<p>realised: <b>{escape(pnl['realised'] or 'n/a')}</b>"
    head += f" ({escape(pnl['note'])})</p>" if pnl.get("note") else "</p>"
    return head + table(
        ("INSTRUMENT", "BOUGHT", "SOLD", "REALISED", "OPEN QTY"),
        (
            (i["instrument"], i["bought"], i["sold"], i["realised"] or "n/a", i["open_quantity"])
            for i in pnl.get("instruments", [])
        ),
        "no fills",
    )


def render_run(data: dict[str, Any]) -> str:
    run = data["run"]
    zone = run.get("timezone")

    def t(iso: str | None) -> str | None:
        return local_text(iso, zone)

    calls = ", ".join(f"{k} {v}" for k, v in sorted(data["broker_calls"].items()))
    parts = [
        '<p><a href="../">&larr; status</a></p>',
        f"<h1>run {escape(run['run_id'])}: {escape(run['playbook'])} on {escape(run['account'])} "
        f'<span class="{escape(run["status"])}">{escape(run["status"])}</span></h1>',
        f"<p>scheduled for {escape(t(run['scheduled_for']) or '')}, "
        f"started {escape(t(run['started_at']) or '')}, "
        f"finished {escape(t(run['finished_at']) or '-')}"
        + (f"; {escape(run['message'])}" if run.get("message") else "")
        + (f"; resume: <code>{escape(run['resume'])}</code>" if run.get("resume") else "")
        + "</p>",
        "<h2>Steps</h2>",
        table(
            ("STEP", "KIND", "OUTCOME", "STARTED", "FINISHED", "MESSAGE"),
            (
                (s["id"], s["kind"], s["outcome"], t(s["started_at"]), t(s["finished_at"]), s["message"])
                for s in data["steps"]
            ),
            "no steps",
        ),
        # The run view (runner/views/run_report.py, shared with `runner show`): each order's price history
        # (placed, chase steps, conversion to MARKET, fills) and the run's P&L.
        '<h2 id="orders">Orders</h2>',
        table(
            (
                "ORDER",
                "STEP",
                "LEG",
                "TRY",
                "PURPOSE",
                "INSTRUMENT",
                "SIDE",
                "QTY",
                "TYPE",
                "PRICE",
                "STATUS",
                "FILLED",
                "AVG PRICE",
                "PRICE HISTORY",
                "AS OF",
            ),
            (
                (
                    o["client_order_id"],
                    o["step"],
                    o["leg"],
                    o["attempt"],
                    o["purpose"],
                    o["instrument"],
                    o["side"],
                    o["quantity"],
                    o["type"],
                    o["price"],
                    o["status"],
                    o["filled_quantity"],
                    o["average_price"],
                    " → ".join(o.get("history_text") or o["transitions"]),
                    t(o["as_of"]),
                )
                for o in data["orders"]
            ),
            "no orders",
        ),
        "<h2>Fills</h2>",
        table(
            ("ORDER", "QTY", "PRICE", "AT"),
            ((f["client_order_id"], f["quantity"], f["price"], t(f["at"])) for f in data["fills"]),
            "no fills",
        ),
        '<h2 id="pnl">P&amp;L</h2>',
        _pnl(data.get("pnl")),
        "<h2>Errors and warnings</h2>",
        table(
            ("STEP", "LEVEL", "KIND", "MESSAGE", "AT"),
            ((e["step"], e["level"], e["kind"], e["message"], t(e["at"])) for e in data["errors"]),
            "none",
        ),
        f"<p class=muted>broker calls: {escape(calls or 'none')}</p>",
    ]
    return document(f"run {run['run_id']}", "".join(parts))


def render_not_found(what: str) -> str:
    return document(
        "not found", f"<h1>not found</h1><p>{escape(what)}</p><p><a href='../'>status</a></p>", False
    )
