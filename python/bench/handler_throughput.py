"""Works the jobs already waiting on a queue with a Python handler that only acknowledges, and
prints how fast, as JSON. Run by ffi/examples/handler_throughput.rs (which enqueues the jobs
and measures the same with a Rust handler); alone:

    PGBROKER_LIB=target/release/libpgbroker.so python3 python/bench/handler_throughput.py \\
        --url postgres://... --queue q --jobs 20000 --threads 4 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pgbroker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()

    done = 0
    lock = threading.Lock()
    finished = threading.Event()

    def ack(job: pgbroker.Job) -> None:
        nonlocal done
        with lock:
            done += 1
            if done == args.jobs:
                finished.set()

    with pgbroker.Broker(args.url) as broker:
        pool = broker.worker_pool(threads=args.threads)
        pool.queue(args.queue, ack, concurrency=args.concurrency)
        started = time.monotonic()
        pool.start()
        if not finished.wait(timeout=600):
            raise SystemExit(f"only {done} of {args.jobs} jobs done in 600 s")
        elapsed = time.monotonic() - started
        stats = pool.shutdown()
        pool.close()
    print(json.dumps({"jobs": done, "seconds": elapsed, "jobs_per_sec": done / elapsed,
                      "handled": stats.handled}))


if __name__ == "__main__":
    main()
