"""The worker pool running Python handlers: jobs, batches, raising handlers, shutdown."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

import pgbroker

from helpers import wait_until


def test_pool_runs_jobs_and_batches(broker: pgbroker.Broker, name: str) -> None:
    broker.subscribe(name, f"{name}.#")
    job_ids = {broker.enqueue(name, {"i": i}) for i in range(20)}
    broker.publish_batch([(f"{name}.tick", {"i": i}) for i in range(5)])

    done: List[int] = []
    events: List[int] = []
    lock = threading.Lock()
    pool = broker.worker_pool(threads=4, shutdown_grace=5)

    @pool.queue(name, concurrency=3)
    def work(job: pgbroker.Job) -> None:
        assert job.queue == name and job.attempt == 1
        with lock:
            done.append(job.id)

    def on_batch(batch: pgbroker.Batch) -> None:
        with lock:
            events.extend(e.payload["i"] for e in batch)

    pool.subscription(name, on_batch)
    pool.start()
    with pytest.raises(pgbroker.ShutdownError):
        pool.start()
    assert wait_until(lambda: len(done) == 20 and len(events) == 5)
    stats = pool.shutdown()
    pool.close()
    assert sorted(done) == sorted(job_ids)
    assert events == [0, 1, 2, 3, 4]
    assert stats.handled == 21 and stats.failed == 0  # 20 jobs, 1 batch
    assert broker.claim(name, max=100) == []  # every job completed


def test_raising_handler_retries_the_job(broker: pgbroker.Broker, name: str) -> None:
    job_id = broker.enqueue(name, {"n": 1}, backoff=0.05)
    attempts: List[int] = []

    def flaky(job: pgbroker.Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    pool = broker.worker_pool(threads=1)
    pool.queue(name, flaky)
    with pool:
        assert wait_until(lambda: attempts == [1, 2])
    assert attempts == [1, 2]
    assert broker.claim(name) == []  # completed on its second attempt
    assert job_id > 0


def test_raising_batch_handler_retries_the_events(broker: pgbroker.Broker, name: str) -> None:
    broker.subscribe(name, f"{name}.#")
    broker.publish(f"{name}.x", {"n": 1})
    seen: List[int] = []

    def handler(batch: pgbroker.Batch) -> None:
        seen.append(batch.attempt)
        if batch.attempt == 0:
            raise ValueError("not yet")

    pool = broker.worker_pool(threads=1)
    pool.subscription(name, handler)
    with pool:
        assert wait_until(lambda: len(seen) >= 2, timeout=15)
    assert seen[:2] == [0, 1]


def test_shutdown_waits_for_running_jobs_and_releases_the_rest(
    broker: pgbroker.Broker, name: str
) -> None:
    for i in range(10):
        broker.enqueue(name, {"i": i})
    started: List[int] = []
    finished: List[int] = []
    lock = threading.Lock()

    def slow(job: pgbroker.Job) -> None:
        with lock:
            started.append(job.id)
        time.sleep(0.5)
        with lock:
            finished.append(job.id)

    pool = broker.worker_pool(threads=2, shutdown_grace=10)
    pool.queue(name, slow, concurrency=2)
    pool.start()
    assert wait_until(lambda: len(started) >= 2)
    stats = pool.shutdown()
    pool.close()
    # Every handler that started finished; none started after shutdown; the rest are free.
    assert sorted(finished) == sorted(started)
    assert stats.handled == len(finished) and stats.failed == 0
    remaining = broker.claim(name, max=100)
    assert len(remaining) == 10 - len(finished)
    assert {j.id for j in remaining}.isdisjoint(finished)
    assert all(j.attempt == 1 for j in remaining)  # released, not counted as attempts


def test_bad_pool_registrations_fail_at_start(broker: pgbroker.Broker, name: str) -> None:
    pool = broker.worker_pool(threads=1)
    pool.queue("bad queue!", lambda job: None)
    with pytest.raises(pgbroker.InvalidNameError):
        pool.start()
    pool.close()
    pool = broker.worker_pool(threads=1)
    pool.queue(name, lambda job: None, concurrency=0)
    with pytest.raises(pgbroker.ConfigError):
        pool.start()
    pool.close()
    with pytest.raises(pgbroker.ShutdownError):
        pool.start()
