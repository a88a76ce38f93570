"""The worker pool: Python callables run on libpgbroker's threads for jobs and event batches."""

from __future__ import annotations

import ctypes
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, TypeVar

from . import _lib
from .errors import ShutdownError, call
from .log import Batch
from .queue import Job

_log = logging.getLogger("pgbroker")

JobHandler = Callable[[Job], Any]
BatchHandler = Callable[[Batch], Any]
H = TypeVar("H", bound=Callable[..., Any])

# Callbacks of pools whose shutdown timed out: their threads may still call them, so they must
# never be freed.
_kept_alive: List[Any] = []


@dataclass(frozen=True)
class PoolStats:
    """A pool's counters at shutdown."""

    handled: int
    """Handler calls that returned normally."""
    failed: int
    """Handler calls that raised."""
    abandoned: int
    """Items received but not started because the pool shut down (their jobs are released)."""


def _failure(outcome: Any, what: str, exc: BaseException) -> int:
    message = f"{type(exc).__name__}: {exc}"
    _log.warning("pgbroker: %s handler failed: %s", what, message, exc_info=exc)
    _lib.lib.pgbroker_outcome_set_error(outcome, message.encode("utf-8", "replace"))
    return 1


def _job_callback(handler: JobHandler) -> Any:
    def run(_user_data: Any, job: Any, outcome: Any) -> int:
        try:
            handler(Job._from_c(job))
            return 0
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind into C
            return _failure(outcome, "job", exc)

    return _lib.JOB_CALLBACK(run)


def _batch_callback(handler: BatchHandler) -> Any:
    def run(_user_data: Any, batch: Any, outcome: Any) -> int:
        try:
            handler(Batch(batch, owned=False))
            return 0
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind into C
            return _failure(outcome, "batch", exc)

    return _lib.BATCH_CALLBACK(run)


def _free_pool(handle: Any, _callbacks: List[Any]) -> None:
    # `_callbacks` rides along so the C function pointers outlive the pool's threads.
    _lib.lib.pgbroker_pool_free(handle)


class WorkerPool:
    """A fixed pool of threads running Python handlers; made by :meth:`Broker.worker_pool`.

    Register handlers, then :meth:`start`; :meth:`shutdown` stops gracefully (running handlers
    finish within the grace period, jobs not started are released). As a context manager it
    starts on entry and shuts down on exit.

    Handlers run on the pool's threads (several at once, holding the GIL while in Python). A
    job handler that returns completes the job; one that raises fails the attempt (the job is
    retried with backoff, dead after its last attempt). A batch handler that returns
    acknowledges the batch; one that raises sends its events to retry.

    Example::

        pool = broker.worker_pool(threads=4)

        @pool.queue("emails", concurrency=4)
        def send(job: pgbroker.Job) -> None:
            print("sending", job.payload)

        with pool:
            ...  # runs until the block ends
    """

    def __init__(self, broker_handle: Any, threads: int = 0, shutdown_grace: Optional[float] = None):
        if threads < 0:
            raise ValueError("threads must not be negative")
        grace_ms = 0 if shutdown_grace is None else max(1, int(shutdown_grace * 1000))
        handle = ctypes.POINTER(_lib.PoolHandle)()
        call(_lib.lib.pgbroker_pool_new, broker_handle, threads, grace_ms, ctypes.byref(handle))
        self._handle = handle
        self._callbacks: List[Any] = []
        self._finalizer = weakref.finalize(self, _free_pool, handle, self._callbacks)

    def queue(
        self, queue: str, handler: Optional[JobHandler] = None, *, concurrency: int = 1
    ) -> Any:
        """Runs ``handler(job)`` for the jobs of ``queue``, at most ``concurrency`` at a time.
        Usable as a decorator: ``@pool.queue("emails", concurrency=4)``."""

        def register(h: H) -> H:
            callback = _job_callback(h)
            self._callbacks.append(callback)
            call(
                _lib.lib.pgbroker_pool_queue,
                self._handle,
                queue.encode(),
                concurrency,
                callback,
                None,
            )
            return h

        return register if handler is None else register(handler)

    def subscription(self, name: str, handler: Optional[BatchHandler] = None) -> Any:
        """Runs ``handler(batch)`` for batches of events of subscription ``name`` (which must
        exist: :meth:`Broker.subscribe`), in log order. Usable as a decorator."""

        def register(h: H) -> H:
            callback = _batch_callback(h)
            self._callbacks.append(callback)
            call(_lib.lib.pgbroker_pool_subscription, self._handle, name.encode(), callback, None)
            return h

        return register if handler is None else register(handler)

    def start(self) -> "WorkerPool":
        """Starts the threads: handlers begin to run."""
        self._check_open()
        call(_lib.lib.pgbroker_pool_start, self._handle)
        return self

    def shutdown(self) -> PoolStats:
        """Stops gracefully and waits for the threads; returns the counters. Raises
        :class:`BrokerTimeoutError` when handlers still ran after the grace period (they
        finish on their own). A second call returns zero counters."""
        self._check_open()
        stats = _lib.PoolStats()
        try:
            call(_lib.lib.pgbroker_pool_shutdown, self._handle, ctypes.byref(stats))
        except BaseException:
            _kept_alive.extend(self._callbacks)
            raise
        return PoolStats(stats.handled, stats.failed, stats.abandoned)

    def close(self) -> None:
        """Shuts down (if running) and frees the pool; idempotent."""
        self._finalizer()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise ShutdownError("the worker pool is closed", "shutdown")

    def __enter__(self) -> "WorkerPool":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.shutdown()
        finally:
            self.close()
