"""Pub/sub on LISTEN/NOTIFY: what a listener yields, and the listener."""

from __future__ import annotations

import ctypes
import json
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

from . import _lib
from ._json import text
from .errors import call

# How long one wait in C lasts at most: Python runs signal handlers (Ctrl-C raising
# KeyboardInterrupt) only between two waits.
_SLICE_MS = 100


@dataclass(frozen=True)
class Notification:
    """A notification: its channel and payload (text, as sent)."""

    channel: str
    payload: str

    def json(self) -> Any:
        """The payload parsed as JSON (``json.JSONDecodeError`` when it is not)."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class Disconnected:
    """The listener lost its connection and is reconnecting; notifications sent until
    :class:`Reconnected` are lost."""

    channel: str
    reason: str


@dataclass(frozen=True)
class Reconnected:
    """The listener listens again: re-read durable state (tables, the log, the queue)."""

    channel: str


ListenEvent = Union[Notification, Disconnected, Reconnected]


class Listener:
    """Receives the notifications of one channel; made by :meth:`Broker.listen`.

    A background thread (in libpgbroker) owns a dedicated connection and queues what arrives,
    so a slow reader never holds back the server. Close it (or use ``with``) to stop
    listening. Use it from one thread at a time.

    Example::

        with broker.listen("orders") as listener:
            broker.notify("orders", {"id": 1})
            for event in listener.iter(timeout=5):
                print(event.json())
                break
    """

    def __init__(self, handle: "ctypes._Pointer[_lib.ListenerHandle]", channel: str):
        self._handle = handle
        self.channel = channel
        self._finalizer = weakref.finalize(self, _lib.lib.pgbroker_listener_free, handle)

    def recv(self, timeout: Optional[float] = None) -> Optional[ListenEvent]:
        """The next event, waiting up to ``timeout`` seconds (forever when ``None``); ``None``
        when nothing arrived in time. Ctrl-C interrupts the wait (``KeyboardInterrupt``)."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            if deadline is None:
                slice_ms = _SLICE_MS
            else:
                left = deadline - time.monotonic()
                slice_ms = max(0, min(_SLICE_MS, int(left * 1000)))
            event = ctypes.POINTER(_lib.EventHandle)()
            call(_lib.lib.pgbroker_listener_recv, self._handle, slice_ms, ctypes.byref(event))
            if event:
                return _convert(event)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def iter(self, timeout: Optional[float] = None) -> Iterator[ListenEvent]:
        """Yields events as they arrive; stops once none arrived for ``timeout`` seconds
        (never when ``None``)."""
        while True:
            event = self.recv(timeout)
            if event is None:
                return
            yield event

    def __iter__(self) -> Iterator[ListenEvent]:
        return self.iter()

    def close(self) -> None:
        """Stops listening (idempotent). Events not yet received are dropped."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _check_open(self) -> None:
        if self.closed:
            from .errors import ShutdownError

            raise ShutdownError("the listener is closed", "shutdown")

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _convert(event: "ctypes._Pointer[_lib.EventHandle]") -> ListenEvent:
    try:
        kind = _lib.lib.pgbroker_event_kind(event)
        channel = text(_lib.lib.pgbroker_event_channel(event))
        payload = text(_lib.lib.pgbroker_event_payload(event))
    finally:
        _lib.lib.pgbroker_event_free(event)
    if kind == 0:
        return Notification(channel, payload)
    if kind == 1:
        return Disconnected(channel, payload)
    return Reconnected(channel)
