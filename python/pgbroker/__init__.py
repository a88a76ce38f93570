"""pgbroker for Python: PostgreSQL as a message broker (pub/sub, a durable event log with
subscriptions, a job queue), over libpgbroker's C ABI with ctypes.

Example::

    import pgbroker

    with pgbroker.Broker("postgres://app@localhost/app") as broker:
        broker.install()
        broker.enqueue("emails", {"to": "a@example.com"})

        pool = broker.worker_pool(threads=2)

        @pool.queue("emails", concurrency=2)
        def send(job: pgbroker.Job) -> None:
            print("sending to", job.payload["to"])

        with pool:
            ...
"""

from ._json import RawJSON
from ._lib import lib as _clib
from .broker import Broker, NewEvent
from .errors import (
    BrokerIOError,
    BrokerTimeoutError,
    ConfigError,
    ConnectError,
    ConnectionClosedError,
    DatabaseError,
    Error,
    HandlerError,
    InternalError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    PayloadTooLargeError,
    PoolError,
    SerializeError,
    ShutdownError,
)
from .log import Batch, LogEvent
from .notify import Disconnected, Listener, ListenEvent, Notification, Reconnected
from .pool import PoolStats, WorkerPool
from .queue import Job

__version__: str = _clib.pgbroker_version().decode()
"""The version of the loaded libpgbroker."""

__all__ = [
    "Batch",
    "Broker",
    "BrokerIOError",
    "BrokerTimeoutError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosedError",
    "DatabaseError",
    "Disconnected",
    "Error",
    "HandlerError",
    "InternalError",
    "InvalidInputError",
    "InvalidNameError",
    "Job",
    "ListenEvent",
    "Listener",
    "LogEvent",
    "NewEvent",
    "Notification",
    "NotFoundError",
    "PayloadTooLargeError",
    "PoolError",
    "PoolStats",
    "RawJSON",
    "Reconnected",
    "SerializeError",
    "ShutdownError",
    "WorkerPool",
    "schema_sql",
]


def schema_sql() -> str:
    """The SQL :meth:`Broker.install` applies (to review it, or apply with ``psql -1 -f``)."""
    import ctypes

    ptr = _clib.pgbroker_schema_sql()
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        _clib.pgbroker_string_free(ptr)
