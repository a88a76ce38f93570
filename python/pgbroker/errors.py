"""Exceptions: one class per kind of failure, each carrying ``kind`` and ``sqlstate``."""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

from . import _lib


class Error(Exception):
    """A pgbroker failure.

    Attributes:
        kind: the kind's stable name (``"connect"``, ``"db"``, ``"serialize"``, ...).
        sqlstate: PostgreSQL's five-character SQLSTATE when the server reported the error
            (e.g. ``"3D000"``), else ``None``.
        message: what went wrong, with its cause.
    """

    kind: str = "other"

    def __init__(self, message: str, kind: Optional[str] = None, sqlstate: Optional[str] = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        if self.sqlstate:
            return f"{self.message} [sqlstate {self.sqlstate}]"
        return self.message


class ConnectError(Error):
    """Could not connect (refused, timed out, authentication failed, no such database)."""

    kind = "connect"


class PoolError(Error):
    """No pooled connection became free in time."""

    kind = "pool"


class DatabaseError(Error):
    """PostgreSQL answered with an error; ``sqlstate`` says which."""

    kind = "db"


class ConnectionClosedError(Error):
    """The connection was closed underneath (server restart, terminated backend, network)."""

    kind = "closed"


class BrokerTimeoutError(Error, TimeoutError):
    """An operation did not finish within its timeout."""

    kind = "timeout"


class SerializeError(Error, ValueError):
    """A payload is not valid JSON."""

    kind = "serialize"


class PayloadTooLargeError(Error, ValueError):
    """A payload is larger than PostgreSQL accepts (7999 bytes for NOTIFY)."""

    kind = "payload_too_large"


class InvalidNameError(Error, ValueError):
    """A channel, topic, queue or subscription name is not acceptable."""

    kind = "invalid_name"


class InvalidInputError(Error, ValueError):
    """An argument is missing, out of range or malformed."""

    kind = "invalid_input"


class ShutdownError(Error):
    """The listener or worker pool was shut down (or a pool was already started)."""

    kind = "shutdown"


class HandlerError(Error):
    """A handler failed."""

    kind = "handler"


class ConfigError(Error):
    """Invalid configuration (a malformed URL, a concurrency of 0, ...)."""

    kind = "config"


class NotFoundError(Error, LookupError):
    """The item does not exist (a subscription; a job no longer held by this claim)."""

    kind = "not_found"


class BrokerIOError(Error, OSError):
    """Reading or writing a local file or process failed."""

    kind = "io"


class InternalError(Error):
    """A bug in pgbroker."""

    kind = "internal"


_BY_KIND = {
    cls.kind: cls
    for cls in (
        ConnectError,
        PoolError,
        DatabaseError,
        ConnectionClosedError,
        BrokerTimeoutError,
        SerializeError,
        PayloadTooLargeError,
        InvalidNameError,
        InvalidInputError,
        ShutdownError,
        HandlerError,
        ConfigError,
        NotFoundError,
        BrokerIOError,
        InternalError,
    )
}


def _text(p: Optional[bytes]) -> Optional[str]:
    return None if p is None else p.decode("utf-8", "replace")


def call(fn: Callable[..., int], *args: object) -> None:
    """Calls a fallible C function with an error out-parameter appended; raises on failure."""
    err = ctypes.POINTER(_lib.Error)()
    rc = fn(*args, ctypes.byref(err))
    if rc == 0:
        return
    try:
        kind = _text(_lib.lib.pgbroker_kind_name(rc)) or "other"
        message = _text(_lib.lib.pgbroker_error_message(err)) or kind
        sqlstate = _text(_lib.lib.pgbroker_error_sqlstate(err))
    finally:
        _lib.lib.pgbroker_error_free(err)
    raise _BY_KIND.get(kind, Error)(message, kind, sqlstate)
