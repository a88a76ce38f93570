"""Pub/sub: notify and listen, including Ctrl-C while waiting."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import pgbroker


def test_notify_reaches_a_listener(broker: pgbroker.Broker, name: str) -> None:
    with broker.listen(name) as listener:
        assert listener.recv(timeout=0) is None  # nothing yet: a timeout is not an error
        broker.notify(name, {"hello": 1})
        broker.notify(name, "plain text")
        first = listener.recv(timeout=10)
        second = listener.recv(timeout=10)
    assert first == pgbroker.Notification(name, '{"hello": 1}')
    assert isinstance(first, pgbroker.Notification) and first.json() == {"hello": 1}
    assert second == pgbroker.Notification(name, "plain text")
    assert listener.closed
    with pytest.raises(pgbroker.ShutdownError):
        listener.recv(timeout=0)


def test_iter_stops_after_the_timeout(broker: pgbroker.Broker, name: str) -> None:
    with broker.listen(name) as listener:
        for i in range(3):
            broker.notify(name, str(i))
        started = time.monotonic()
        payloads = [e.payload for e in listener.iter(timeout=0.3)]  # type: ignore[union-attr]
        elapsed = time.monotonic() - started
    assert payloads == ["0", "1", "2"]
    assert elapsed < 5


def test_keyboard_interrupt_during_listen(broker: pgbroker.Broker, name: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    with broker.listen(name) as listener:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                listener.recv(timeout=30)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5
        # The listener still works after the interruption.
        broker.notify(name, "after")
        event = listener.recv(timeout=10)
    assert event == pgbroker.Notification(name, "after")
