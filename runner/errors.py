"""Typed broker error taxonomy. Every adapter maps its wire errors onto this tree.

    BrokerError
    ├── Rejected               the broker refused the request: never retry the same request
    │   ├── NotFound           no such order / position at the broker
    │   └── NotModifiable      the order exists but can no longer be modified or cancelled
    ├── Retryable              the request did not take effect: retry with backoff
    │   ├── Unavailable        5xx, connection refused before sending, maintenance
    │   ├── RateLimited        429 / throttled: honour ``retry_after``
    │   └── WaitTooLong        the wait asked for (Retry-After) or needed passes our maximum or the
    │                          caller's deadline: the call fails now instead of parking the step
    ├── AuthExpired            session or token expired: log in again once, then retry
    │   └── SessionExpired     the broker ended a live session (token expired or invalidated): the
    │                          ``session_expired`` alert; reads log in again, orders are retried by the engine
    ├── OutcomeUnknown         the request may have reached the broker (timeout after sending, reply
    │                          dropped, connection reset mid-request): resolve by looking the order up,
    │                          never by sending it again
    │   └── AdapterFault       anything else an adapter raised (a bug, a reply it could not read),
    │                          mapped at the gateway's boundary: nothing says the request did not
    │                          take effect, so it is resolved like any unknown outcome
    ├── InstrumentUnknown      the playbook names an instrument the broker's master does not have:
    │                          raised before anything is sent
    └── Malformed              a broker reply we cannot read exactly: a required field missing, a
                               quantity with a fraction, NaN, text; names the field and the value

Configuration and playbook problems are not broker errors; they are reported by the validator.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every broker-side failure. ``code`` is the broker's own code, kept for the journal."""

    retryable = False

    def __init__(self, message: str, *, code: str | None = None, broker: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.broker = broker

    def __str__(self) -> str:
        prefix = f"[{self.broker}] " if self.broker else ""
        suffix = f" (code {self.code})" if self.code else ""
        return f"{prefix}{self.message}{suffix}"


class Rejected(BrokerError):
    """Refused by the broker (risk check, bad price, lot size, insufficient margin...)."""


class NotFound(Rejected):
    """The order or position does not exist at the broker."""


class NotModifiable(Rejected):
    """The order is in a state that cannot be modified or cancelled (filled, cancelled...)."""


class Retryable(BrokerError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        broker: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, broker=broker)
        self.retry_after = retry_after  # seconds, from Retry-After when the broker sends it


class Unavailable(Retryable):
    """The broker could not take the request; it certainly did not act on it."""


class RateLimited(Retryable):
    """Throttled by the broker (HTTP 429 or an equivalent code)."""


class WaitTooLong(Retryable):
    """The broker did not act, and retrying would mean waiting past ``Tuning.max_retry_after`` or the
    caller's deadline: the call fails with this instead of sleeping. ``__cause__`` is the broker's error."""


class AuthExpired(BrokerError):
    """Session expired or token invalid: log in again once, then retry."""


class SessionExpired(AuthExpired):
    """The broker says a session that was logged in has ended (expired token, daily logout, a login
    elsewhere), as opposed to a login refused. Adapters report each one (:mod:`runner.brokers.expiry`)."""


class OutcomeUnknown(BrokerError):
    """The request may or may not have taken effect. Look the order up by client id; never re-send."""


class AdapterFault(OutcomeUnknown):
    """A non-broker exception from an adapter, mapped into the taxonomy (see
    runner.engine.gateway.Gateway.call)."""


class InstrumentUnknown(BrokerError):
    """The instrument master has no such instrument for this broker."""


class Malformed(BrokerError):
    """A field of a broker reply is missing or not a value we can read exactly. Nothing is assumed in
    its place (a missing filled quantity is not "0 filled")."""

    def __init__(self, field: str, value: object, *, reason: str, broker: str | None = None) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."  # a reply can be arbitrarily long
        super().__init__(f"{field}={shown}: {reason}", broker=broker)
        self.field = field
        self.value = value


__all__ = [
    "AdapterFault",
    "AuthExpired",
    "BrokerError",
    "InstrumentUnknown",
    "Malformed",
    "NotFound",
    "NotModifiable",
    "OutcomeUnknown",
    "RateLimited",
    "Rejected",
    "Retryable",
    "SessionExpired",
    "Unavailable",
    "WaitTooLong",
]
