"""The queue by hand: enqueue with options, claim, complete, fail."""

from __future__ import annotations

import time

import pytest

import pgbroker


def test_enqueue_claim_complete_fail(broker: pgbroker.Broker, name: str) -> None:
    plain = broker.enqueue(name, {"n": 1})
    urgent = broker.enqueue(name, {"n": 2}, priority=-5, max_attempts=3, unique_key="urgent-1")
    assert broker.enqueue(name, {"n": 3}, unique_key="urgent-1") == urgent
    broker.enqueue(name, {}, delay=60)

    jobs = broker.claim(name, max=10, lease=30)
    assert [j.id for j in jobs] == [urgent, plain]  # smaller priority first; delayed not due
    first, second = jobs
    assert first.queue == name
    assert first.payload == {"n": 2}
    assert (first.attempt, first.max_attempts, first.priority) == (1, 3, -5)
    assert first.unique_key == "urgent-1"
    assert second.unique_key is None and second.max_attempts == 25

    broker.complete(first)
    with pytest.raises(pgbroker.NotFoundError):
        broker.complete(first)
    broker.fail(second, "smtp timeout")
    with pytest.raises(pgbroker.NotFoundError):
        broker.fail(second)
    assert broker.claim(name, max=10) == []  # the failed job waits for its backoff


def test_failed_job_comes_back_after_its_backoff(broker: pgbroker.Broker, name: str) -> None:
    job_id = broker.enqueue(name, {"n": 1}, backoff=0.05)
    (job,) = broker.claim(name)
    broker.fail(job, "try again")
    deadline = time.monotonic() + 10
    again = []
    while not again and time.monotonic() < deadline:
        again = broker.claim(name)
        time.sleep(0.02)
    assert [(j.id, j.attempt) for j in again] == [(job_id, 2)]
    broker.complete(again[0])
