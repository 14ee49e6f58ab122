"""structlog, configured in this one place.

* JSON lines (to a file or stdout) for machines; a readable console renderer on a TTY.
* Every engine event is bound with ``run``, ``playbook``, ``step`` and ``client_order_id`` where known.
* :func:`redact` runs on every event: secret-looking keys and :class:`runner.accounts.Secret` values never
  reach a log line (the journal uses the same function for broker requests and responses). It runs after
  exception formatting, and the rendered line, tracebacks included, is scrubbed of every registered secret
  value (:mod:`runner.scrub`; their JSON-escaped and URL-quoted forms too).
* One configuration for everything: the stdlib loggers (scheduler, kill switch, adapters, libraries) go
  through one root handler whose ``ProcessorFormatter`` ends in the same processors and renderer as
  structlog's own events, which are written to that handler's stream: one format on stderr.
"""

from __future__ import annotations

import datetime as dt
import functools
import json as jsonlib
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from decimal import Decimal
from typing import Any, TextIO, cast

import structlog

from runner.scrub import REDACTED, ScrubbingStream, scrub

# Long words match anywhere in a key (``accessToken``, ``x-api-key``); short ones only as a whole word
# (``sid`` but not ``side``, ``pin`` but not ``pending``).
SECRET_PARTS = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "signature",
    "cookie",
    "apikey",
    "api_key",
    "api-key",
    "mpin",
    "totp",
    "jwt",
    "private_key",
    "credential",
)
SECRET_WORDS = frozenset({"sid", "pin", "otp", "pwd", "auth", "session", "sessionid", "pass"})
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
# Bearer tokens and JWT-looking strings inside free text.
BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b")


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _secret_name(key)


@functools.lru_cache(maxsize=4096)
def _secret_name(key: str) -> bool:
    low = key.lower()
    if low == "key" or any(part in low for part in SECRET_PARTS):
        return True
    words = _WORD_SPLIT.split(re.sub(r"([a-z])([A-Z])", r"\1_\2", key).lower())
    return any(w in SECRET_WORDS for w in words)


# Types that never carry a secret: returned as they are without further checks (the hot path: a log
# event or a broker call row is mostly these).
_PLAIN: frozenset[type] = frozenset({int, float, bool, type(None), Decimal, dt.datetime, dt.date})
_secret_type: type | None = None  # runner.accounts.Secret, imported on first use (cold start)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets replaced by ``***`` (dicts, lists, Secret objects, bearer text)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is str:
        return _redact_text(value)
    if _depth > 20:
        return value
    if t is dict:
        return _redact_dict(value, _depth)
    global _secret_type
    if _secret_type is None:
        from runner.accounts import Secret

        _secret_type = Secret
    if isinstance(value, _secret_type):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _is_secret_key(k) and v is not None else redact(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v, _depth + 1) for v in value)
    if isinstance(value, str):
        return _redact_text(value)
    return value


_KEYS: dict[object, bool] = {}  # key -> is secret (bounded below; keys are mostly code constants)


def _redact_dict(value: dict[Any, Any], depth: int) -> dict[Any, Any]:
    # Inlined per item: a log event or call row is a dozen keys of plain values, on every order.
    out = {}
    for k, v in value.items():
        secret = _KEYS.get(k)
        if secret is None:
            if len(_KEYS) > 4096:
                _KEYS.clear()
            secret = _KEYS[k] = _is_secret_key(k)
        t = type(v)
        if secret and v is not None:
            out[k] = REDACTED
        elif t in _PLAIN:
            out[k] = v
        elif t is str:
            out[k] = _redact_text(v)
        else:
            out[k] = redact(v, depth + 1)
    return out


def _redact_text(value: str) -> str:
    if "earer" in value or "eyJ" in value:
        return JWT_RE.sub(REDACTED, BEARER_RE.sub(r"\1 " + REDACTED, value))
    # Registered secret values are scrubbed once per sink, on the final text (the rendered log line,
    # runner.journal.db.ScrubbedText for the journal), not once per field here as well.
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    redacted: Mapping[str, Any] = redact(event_dict)
    return redacted


def _scrub_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    """Last step after the renderer: the line as it will be written, scrubbed of secret values."""
    return scrub(rendered) if isinstance(rendered, str) else rendered


# The processors below do what structlog's TimeStamper(fmt="iso", utc=True) and JSONRenderer(sort_keys=True)
# did, byte for byte, at a fraction of the cost: a daemon writes ~5 lines per fire, 1,000 fires at an
# instant (bench/fire_logging.py).
_second: tuple[int, str] = (-1, "")  # the last second stamped and its "YYYY-MM-DDTHH:MM:SS"


def _timestamp(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``timestamp``: now in UTC, ISO 8601 with microseconds (none when 0, as ``isoformat``) and ``Z``;
    the date and time of day formatted once per second."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)  # floored, as datetime.now()
    second, prefix = _second
    if sec != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = (sec, prefix)
    event_dict["timestamp"] = f"{prefix}.{us:06d}Z" if us else f"{prefix}Z"
    return event_dict


def _json_default(value: Any) -> Any:
    """What JSON cannot hold: its ``__structlog__()`` or its repr (structlog's fallback)."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


# one encoder for every line (json.dumps with options builds a new one per call)
_encode = jsonlib.JSONEncoder(sort_keys=True, default=_json_default).encode


def _render_json(_logger: Any, _method: str, event_dict: Mapping[str, Any]) -> str:
    return _encode(event_dict)


class _RecordFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ProcessorFormatter without its copy of each stdlib record (~7 us of a ~30 us line,
    one per fire at the instant: "fire ... succeeded"). The copy shields other handlers (pytest's, say)
    from what ``format`` changes on the record; here the record is only read, and the line is what
    ProcessorFormatter returns: the event dict through the pre-chain and the processors."""

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "_logger"):  # a structlog event wrapped for the formatter: the stock way
            return super().format(record)
        method = record.levelname.lower()
        ed: Any = {"event": record.getMessage(), "_record": record, "_from_structlog": False}
        if record.exc_info:
            ed["exc_info"] = record.exc_info
        if record.stack_info:
            ed["stack_info"] = record.stack_info
        for proc in (*(self.foreign_pre_chain or ()), *self.processors):
            ed = proc(self.logger, method, ed)
        return cast(str, ed)


_configured = False
_handler: logging.Handler | None = None
# Libraries that log every request at INFO (URLs, frames): warnings only.
QUIET_LOGGERS = ("httpx", "httpcore", "websockets", "aiohttp.access", "apscheduler")


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (a test runner swaps and closes it between tests). Lines
    come here scrubbed (:func:`_scrub_rendered`), so a CLI command's :class:`ScrubbingStream` on stderr
    is stepped past, not run over each line a second time."""

    def write(self, text: str) -> int:
        stream = sys.stderr
        if type(stream) is ScrubbingStream:
            stream = stream.inner
        return stream.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _HandlerLogger:
    """structlog's logger: the rendered line goes to the one stdlib handler's stream, under its lock.

    structlog events skip the stdlib ``LogRecord`` machinery (record, hierarchy walk, the formatter's
    record copy: ~60 us per order on the engine bench) but share the handler, its stream and the
    processors with every stdlib record, so stderr carries one format and lines never interleave."""

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str) -> None:
        self._handler = handler
        self.name = name  # for add_logger_name

    def msg(self, message: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.stream.flush()
        finally:
            handler.release()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure(
    *, json: bool | None = None, stream: TextIO | None = None, level: int = logging.INFO, force: bool = False
) -> None:
    """Configure logging once per process. ``json=None``: console on a TTY, JSON lines otherwise.

    One handler on ``stream`` at the root logger: stdlib records (scheduler, kill switch, adapters,
    libraries) through structlog's :class:`ProcessorFormatter`, structlog's own events through the same
    tail of processors, written by :class:`_HandlerLogger` to the same stream: exceptions formatted, then
    redacted, then rendered, then the line scrubbed of registered secret values."""
    global _configured, _handler
    if _configured and not force:
        return
    if stream is None or stream is sys.stderr:
        stream = cast(TextIO, _Stderr())
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        _render_json
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty() and "NO_COLOR" not in os.environ)
    )
    timestamper = _timestamp
    tail = [
        structlog.processors.format_exc_info,  # before redaction and scrubbing: tracebacks included
        redact_processor,
        renderer,
        _scrub_rendered,
    ]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        _RecordFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda name="runner", *_: _HandlerLogger(handler, name),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bound: Any) -> Any:
    if not structlog.is_configured():  # never let an unconfigured default print unredacted events
        configure()
    return structlog.get_logger("runner").bind(**bound)
