"""The job queue's values: a job as a handler or a claimer sees it."""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from . import _lib
from ._json import text


@dataclass(frozen=True)
class Job:
    """A claimed job (in a pool's handler, or from :meth:`Broker.claim`)."""

    id: int
    queue: str
    payload_json: str
    """The payload as JSON text."""
    attempt: int
    """This attempt's number, from 1."""
    max_attempts: int
    priority: int
    unique_key: Optional[str]
    # For a job from Broker.claim: the C job and what keeps it alive (its pgbroker_jobs).
    _handle: Any = field(default=None, repr=False, compare=False)
    _owner: Any = field(default=None, repr=False, compare=False)

    @property
    def payload(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload_json)

    @staticmethod
    def _from_c(
        handle: "ctypes._Pointer[_lib.JobHandle]", owner: Any = None
    ) -> "Job":
        lib = _lib.lib
        key = lib.pgbroker_job_unique_key(handle)
        return Job(
            id=lib.pgbroker_job_id(handle),
            queue=text(lib.pgbroker_job_queue(handle)),
            payload_json=text(lib.pgbroker_job_payload(handle)),
            attempt=lib.pgbroker_job_attempt(handle),
            max_attempts=lib.pgbroker_job_max_attempts(handle),
            priority=lib.pgbroker_job_priority(handle),
            unique_key=None if key is None else key.decode("utf-8", "replace"),
            _handle=handle if owner is not None else None,
            _owner=owner,
        )


class _ClaimedJobs:
    """Owns a ``pgbroker_jobs``: freed when no claimed :class:`Job` refers to it any more."""

    def __init__(self, handle: "ctypes._Pointer[_lib.JobsHandle]"):
        self.handle = handle

    def __del__(self) -> None:
        _lib.lib.pgbroker_jobs_free(self.handle)
