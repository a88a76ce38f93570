"""pgbroker from Python: enqueue jobs, work them on a pool with a Python handler, publish events
and read them from a subscription, and see a clear error for bad input.

    PGBROKER_LIB=target/release/libpgbroker.so DATABASE_URL=postgres://app@localhost/app \\
        python3 python/examples/worker.py
"""

from __future__ import annotations

import os
import threading

import pgbroker


def main() -> None:
    with pgbroker.Broker(os.environ["DATABASE_URL"]) as broker:
        broker.install()

        # The queue: ten jobs, worked by a pool of 4 threads.
        for i in range(10):
            broker.enqueue("emails", {"to": f"user{i}@example.com"}, max_attempts=5)
        done = threading.Semaphore(0)
        pool = broker.worker_pool(threads=4, shutdown_grace=10)

        @pool.queue("emails", concurrency=4)
        def send_email(job: pgbroker.Job) -> None:
            print(f"job {job.id} (attempt {job.attempt}): {job.payload}")
            done.release()

        with pool:
            for _ in range(10):
                if not done.acquire(timeout=30):
                    raise SystemExit("jobs were not worked within 30 s")
        print("worked 10 jobs")

        # The log: a subscription sees the events published after it was created.
        broker.subscribe("audit", "orders.#")
        broker.publish_batch(
            [
                ("orders.created", {"id": 1}, "customer-1"),
                ("orders.paid", {"id": 1, "amount": 25}, "customer-1"),
                ("orders.created", {"id": 2}, "customer-2"),
            ]
        )
        batch = broker.read("audit", max=100)
        for event in batch:
            print(f"event {event.id} {event.topic}: {event.payload}")
        print(f"read {len(batch)} events")
        broker.ack(batch)

        # Bad input is a clear, typed error.
        try:
            broker.enqueue("emails", pgbroker.RawJSON("{not json"))
        except pgbroker.SerializeError as e:
            print(f"bad JSON: {e} ({e.kind})")


if __name__ == "__main__":
    main()
