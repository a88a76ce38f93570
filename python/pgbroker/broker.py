"""The broker: a connection pool to one PostgreSQL database, and everything that starts from
it."""

from __future__ import annotations

import ctypes
import weakref
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from . import _lib
from ._json import encode
from .errors import ShutdownError, call
from .log import Batch
from .notify import Listener
from .pool import WorkerPool
from .queue import Job, _ClaimedJobs

# An event for publish_batch: (topic, payload) or (topic, payload, key).
NewEvent = Union[Tuple[str, Any], Tuple[str, Any, Optional[str]]]


def _ms(seconds: Optional[float], what: str) -> int:
    if seconds is None:
        return 0
    if seconds < 0:
        from .errors import InvalidInputError

        raise InvalidInputError(f"`{what}` must not be negative, got {seconds}", "invalid_input")
    return int(round(seconds * 1000))


class Broker:
    """A connection pool to one PostgreSQL database used as a message broker.

    Thread-safe: share one per process. Close it (or use ``with``) when done; listeners and
    worker pools made from it keep working until closed themselves.

    Example::

        import pgbroker

        with pgbroker.Broker("postgres://app@localhost/app") as broker:
            broker.install()
            job_id = broker.enqueue("emails", {"to": "a@example.com"})

    Raises :class:`ConfigError` for a malformed URL and :class:`ConnectError` when the server
    cannot be reached or refuses the connection.
    """

    def __init__(self, url: str):
        handle = ctypes.POINTER(_lib.BrokerHandle)()
        call(_lib.lib.pgbroker_connect, url.encode(), ctypes.byref(handle))
        self._handle = handle
        self._finalizer = weakref.finalize(self, _lib.lib.pgbroker_free, handle)

    @property
    def _h(self) -> Any:
        if not self._finalizer.alive:
            raise ShutdownError("the broker is closed", "shutdown")
        return self._handle

    def close(self) -> None:
        """Closes the broker's connections; idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def install(self) -> int:
        """Creates or upgrades the ``pgbroker`` schema; safe on every start. Returns its
        version."""
        version = ctypes.c_int32()
        call(_lib.lib.pgbroker_install, self._h, ctypes.byref(version))
        return version.value

    # pub/sub

    def notify(self, channel: str, payload: Any = "") -> None:
        """Sends ``payload`` on ``channel`` with NOTIFY: a ``str`` as is, anything else as
        JSON. Raises :class:`PayloadTooLargeError` over 7999 bytes."""
        data = payload.encode() if isinstance(payload, str) else encode(payload)
        call(_lib.lib.pgbroker_notify, self._h, channel.encode(), data)

    def listen(self, channel: str) -> Listener:
        """Starts listening on ``channel`` (case-sensitive); see :class:`Listener`."""
        handle = ctypes.POINTER(_lib.ListenerHandle)()
        call(_lib.lib.pgbroker_listen, self._h, channel.encode(), ctypes.byref(handle))
        return Listener(handle, channel)

    # the log

    def publish(self, topic: str, payload: Any, key: Optional[str] = None) -> int:
        """Publishes an event (``payload`` as JSON; see :class:`RawJSON`) and returns its id.
        Events of one ``key`` stay in order on partitioned subscriptions."""
        event_id = ctypes.c_int64()
        call(
            _lib.lib.pgbroker_publish,
            self._h,
            topic.encode(),
            encode(payload),
            None if key is None else key.encode(),
            ctypes.byref(event_id),
        )
        return event_id.value

    def publish_batch(self, events: Iterable[NewEvent]) -> List[int]:
        """Publishes ``(topic, payload)`` or ``(topic, payload, key)`` events in one
        transaction (all or none); returns their ids in order."""
        items = list(events)
        array = (_lib.NewEvent * max(len(items), 1))()
        for i, event in enumerate(items):
            topic, payload = event[0], event[1]
            key = event[2] if len(event) > 2 else None
            array[i] = _lib.NewEvent(
                topic.encode(), encode(payload), None if key is None else key.encode()
            )
        ids = (ctypes.c_int64 * max(len(items), 1))()
        call(_lib.lib.pgbroker_publish_batch, self._h, array, len(items), ids)
        return list(ids[: len(items)])

    def subscribe(self, name: str, pattern: str) -> None:
        """Creates (starting at the end of the log) or updates subscription ``name`` to the
        topics matching ``pattern`` (``orders.*``: one level, ``orders.#``: any, ``#``: all)."""
        call(_lib.lib.pgbroker_subscribe, self._h, name.encode(), pattern.encode())

    def read(self, name: str, max: int = 100) -> Batch:
        """Up to ``max`` events after subscription ``name``'s cursor (reading does not move
        it: :meth:`ack` does). Raises :class:`NotFoundError` for an unknown subscription."""
        handle = ctypes.POINTER(_lib.BatchHandle)()
        call(_lib.lib.pgbroker_read, self._h, name.encode(), max, ctypes.byref(handle))
        return Batch(handle, owned=True)

    def ack(self, batch: Batch) -> None:
        """Moves the subscription's cursor past ``batch`` (a batch from :meth:`read`)."""
        if batch._handle is None:
            raise ValueError("only a batch from Broker.read is acknowledged with ack()")
        call(_lib.lib.pgbroker_ack, self._h, batch._handle)

    # the queue

    def enqueue(
        self,
        queue: str,
        payload: Any,
        *,
        priority: int = 0,
        delay: Optional[float] = None,
        max_attempts: Optional[int] = None,
        unique_key: Optional[str] = None,
        backoff: Optional[float] = None,
        backoff_max: Optional[float] = None,
    ) -> int:
        """Enqueues a job (``payload`` as JSON) and returns its id.

        Args:
            priority: smaller runs first (default 0).
            delay: seconds before it may run (default: at once).
            max_attempts: attempts before it is dead (default 25).
            unique_key: while a job with this key is pending or running, return its id
                instead of enqueueing another.
            backoff: seconds before the first retry, doubling each attempt (default 1).
            backoff_max: the longest wait between retries (default 1 hour).
        """
        if max_attempts is not None and max_attempts < 1:
            from .errors import InvalidInputError

            raise InvalidInputError("`max_attempts` must be at least 1", "invalid_input")
        options = _lib.JobOptions(
            priority=priority,
            delay_ms=_ms(delay, "delay"),
            max_attempts=max_attempts or 0,
            unique_key=None if unique_key is None else unique_key.encode(),
            backoff_base_ms=_ms(backoff, "backoff"),
            backoff_max_ms=_ms(backoff_max, "backoff_max"),
        )
        job_id = ctypes.c_int64()
        call(
            _lib.lib.pgbroker_enqueue,
            self._h,
            queue.encode(),
            encode(payload),
            ctypes.byref(options),
            ctypes.byref(job_id),
        )
        return job_id.value

    def claim(self, queue: str, max: int = 1, lease: float = 30.0) -> List[Job]:
        """Claims up to ``max`` available jobs of ``queue`` for ``lease`` seconds; finish each
        with :meth:`complete` or :meth:`fail` (a pool does this for you)."""
        handle = ctypes.POINTER(_lib.JobsHandle)()
        lease_ms = _ms(lease, "lease")
        call(_lib.lib.pgbroker_claim, self._h, queue.encode(), max, lease_ms, ctypes.byref(handle))
        owner = _ClaimedJobs(handle)
        count = _lib.lib.pgbroker_jobs_len(handle)
        return [Job._from_c(_lib.lib.pgbroker_jobs_get(handle, i), owner) for i in range(count)]

    def complete(self, job: Job) -> None:
        """Completes a job from :meth:`claim`. Raises :class:`NotFoundError` when the claim
        was lost (lease expired and the job claimed again, or cancelled)."""
        call(_lib.lib.pgbroker_complete, self._h, _claimed(job))

    def fail(self, job: Job, reason: Optional[str] = None) -> None:
        """Fails an attempt of a job from :meth:`claim`: retried after its backoff, dead
        after its last attempt. Raises :class:`NotFoundError` when the claim was lost."""
        message = None if reason is None else reason.encode()
        call(_lib.lib.pgbroker_fail, self._h, _claimed(job), message)

    def worker_pool(self, threads: int = 0, shutdown_grace: Optional[float] = None) -> WorkerPool:
        """A new worker pool of ``threads`` threads (0: one per CPU); ``shutdown_grace``:
        seconds running handlers get at shutdown (default 30)."""
        return WorkerPool(self._h, threads, shutdown_grace)


def _claimed(job: Job) -> Any:
    if job._handle is None:
        raise ValueError("only a job from Broker.claim is completed or failed by hand")
    return job._handle


__all__: Sequence[str] = ["Broker", "NewEvent"]
