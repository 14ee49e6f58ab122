"""A loopback HTTP server serving instrument-master files (good, truncated, header-only, renamed) and
accounts whose master is synced from it in the generic CSV format (``endpoints.master_csv``)."""

from __future__ import annotations

import datetime as dt
import http.server
import threading

from runner.accounts import Account

HEADER = "exchange,symbol,expiry,strike,option_type,lot_size,tick_size,freeze_quantity,token,trading_symbol\n"


def expiry() -> dt.date:
    """Comfortably after today, whatever day the tests run."""
    return dt.date.today() + dt.timedelta(days=60)


def master_csv(strikes: range = range(23000, 26000, 100), lot: int = 75) -> bytes:
    e = expiry()
    lines = [
        HEADER,
        "NSE,RELIANCE,,,,1,0.05,,2885,RELIANCE-EQ\n",
        f"NFO,NIFTY,{e},,,{lot},0.1,1800,35001,NIFTYFUT\n",
    ]
    token = 40000
    for strike in strikes:
        for opt in ("CE", "PE"):
            token += 1
            ts = f"NIFTY{e:%y%b}{strike}{opt}".upper()
            lines.append(f"NFO,NIFTY,{e},{strike},{opt},{lot},0.05,1800,{token},{ts}\n")
    return "".join(lines).encode()


class MasterServer:
    """Serves ``files`` (path -> bytes; tests change it between syncs); 404 for anything else."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        served = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def account(server: MasterServer, name: str = "desk", path: str = "/nse_fo.csv", **kw: object) -> Account:
    return Account.model_validate(
        {"name": name, "broker": "kotak_neo", "endpoints": {"master_csv": server.url + path}, **kw}
    )
