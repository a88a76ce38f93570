"""python/examples/worker.py runs against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_worker_example_runs(database_url: str) -> None:
    here = Path(__file__).resolve().parent.parent
    env = dict(os.environ, DATABASE_URL=database_url, PYTHONPATH=str(here))
    out = subprocess.run(
        [sys.executable, str(here / "examples" / "worker.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "worked 10 jobs" in out.stdout
    assert "read 3 events" in out.stdout
    assert "bad JSON: " in out.stdout and "(serialize)" in out.stdout
