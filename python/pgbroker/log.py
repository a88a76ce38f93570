"""The durable event log's values: events and batches read from a subscription."""

from __future__ import annotations

import ctypes
import json
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, overload

from . import _lib
from ._json import text


@dataclass(frozen=True)
class LogEvent:
    """An event read from the log."""

    id: int
    topic: str
    payload_json: str
    """The payload as JSON text (as PostgreSQL prints jsonb: keys sorted)."""
    key: Optional[str]

    @property
    def payload(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload_json)


class Batch(Sequence[LogEvent]):
    """Events of a subscription in log order: a sequence of :class:`LogEvent`.

    A batch from :meth:`Broker.read` is acknowledged with :meth:`Broker.ack`; a batch given to a
    pool's handler is acknowledged by the handler returning (and retried when it raises).
    """

    def __init__(self, handle: "ctypes._Pointer[_lib.BatchHandle]", owned: bool):
        lib = _lib.lib
        self.subscription: str = text(lib.pgbroker_batch_subscription(handle))
        self.attempt: int = lib.pgbroker_batch_attempt(handle)
        """How many times these events failed before (0 on first delivery)."""
        self._events: List[LogEvent] = []
        for i in range(lib.pgbroker_batch_len(handle)):
            key = lib.pgbroker_batch_key(handle, i)
            self._events.append(
                LogEvent(
                    id=lib.pgbroker_batch_event_id(handle, i),
                    topic=text(lib.pgbroker_batch_topic(handle, i)),
                    payload_json=text(lib.pgbroker_batch_payload(handle, i)),
                    key=None if key is None else key.decode("utf-8", "replace"),
                )
            )
        # Only a batch pgbroker handed over (read) keeps its handle, to acknowledge it later.
        self._handle = handle if owned else None
        self._finalizer = (
            weakref.finalize(self, lib.pgbroker_batch_free, handle) if owned else None
        )

    @overload
    def __getitem__(self, i: int) -> LogEvent: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[LogEvent]: ...

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self._events[i]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[LogEvent]:
        return iter(self._events)

    def __repr__(self) -> str:
        return f"Batch(subscription={self.subscription!r}, events={self._events!r})"
