"""Loads libpgbroker and declares the C functions of pgbroker.h for ctypes.

The library comes from ``PGBROKER_LIB`` (a path) when set, else from the system loader
(``libpgbroker.so`` on the library path, e.g. ``/usr/local/lib`` after ``ldconfig``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)


class _Opaque(Structure):
    """Base of the opaque handle types (never dereferenced from Python)."""


class Error(_Opaque):
    pass


class BrokerHandle(_Opaque):
    pass


class ListenerHandle(_Opaque):
    pass


class EventHandle(_Opaque):
    pass


class BatchHandle(_Opaque):
    pass


class JobsHandle(_Opaque):
    pass


class JobHandle(_Opaque):
    pass


class PoolHandle(_Opaque):
    pass


class OutcomeHandle(_Opaque):
    pass


class NewEvent(Structure):
    _fields_ = [("topic", c_char_p), ("json", c_char_p), ("key", c_char_p)]


class JobOptions(Structure):
    _fields_ = [
        ("priority", c_int32),
        ("delay_ms", c_uint64),
        ("max_attempts", c_uint32),
        ("unique_key", c_char_p),
        ("backoff_base_ms", c_uint64),
        ("backoff_max_ms", c_uint64),
    ]


class PoolStats(Structure):
    _fields_ = [("handled", c_uint64), ("failed", c_uint64), ("abandoned", c_uint64)]


ErrOut = POINTER(POINTER(Error))

JOB_CALLBACK = CFUNCTYPE(c_int, c_void_p, POINTER(JobHandle), POINTER(OutcomeHandle))
BATCH_CALLBACK = CFUNCTYPE(c_int, c_void_p, POINTER(BatchHandle), POINTER(OutcomeHandle))


def _load() -> ctypes.CDLL:
    path = os.environ.get("PGBROKER_LIB")
    if path:
        return ctypes.CDLL(path)
    try:
        return ctypes.CDLL("libpgbroker.so")
    except OSError:
        found = ctypes.util.find_library("pgbroker")
        if found is None:
            raise OSError(
                "libpgbroker not found: install it on the library path or set PGBROKER_LIB "
                "to its path (e.g. target/release/libpgbroker.so)"
            ) from None
        return ctypes.CDLL(found)


lib = _load()

# name: (restype, argtypes)
_SIGNATURES = {
    # errors and strings
    "pgbroker_error_kind": (c_int, [POINTER(Error)]),
    "pgbroker_error_message": (c_char_p, [POINTER(Error)]),
    "pgbroker_error_sqlstate": (c_char_p, [POINTER(Error)]),
    "pgbroker_error_free": (None, [POINTER(Error)]),
    "pgbroker_kind_name": (c_char_p, [c_int]),
    "pgbroker_string_free": (None, [c_void_p]),
    "pgbroker_version": (c_char_p, []),
    "pgbroker_schema_sql": (c_void_p, []),
    # broker
    "pgbroker_connect": (c_int, [c_char_p, POINTER(POINTER(BrokerHandle)), ErrOut]),
    "pgbroker_free": (None, [POINTER(BrokerHandle)]),
    "pgbroker_install": (c_int, [POINTER(BrokerHandle), POINTER(c_int32), ErrOut]),
    # notify
    "pgbroker_notify": (c_int, [POINTER(BrokerHandle), c_char_p, c_char_p, ErrOut]),
    "pgbroker_listen": (
        c_int,
        [POINTER(BrokerHandle), c_char_p, POINTER(POINTER(ListenerHandle)), ErrOut],
    ),
    "pgbroker_listener_recv": (
        c_int,
        [POINTER(ListenerHandle), c_int64, POINTER(POINTER(EventHandle)), ErrOut],
    ),
    "pgbroker_listener_free": (None, [POINTER(ListenerHandle)]),
    "pgbroker_event_kind": (c_int, [POINTER(EventHandle)]),
    "pgbroker_event_channel": (c_char_p, [POINTER(EventHandle)]),
    "pgbroker_event_payload": (c_char_p, [POINTER(EventHandle)]),
    "pgbroker_event_free": (None, [POINTER(EventHandle)]),
    # log
    "pgbroker_publish": (
        c_int,
        [POINTER(BrokerHandle), c_char_p, c_char_p, c_char_p, POINTER(c_int64), ErrOut],
    ),
    "pgbroker_publish_batch": (
        c_int,
        [POINTER(BrokerHandle), POINTER(NewEvent), c_size_t, POINTER(c_int64), ErrOut],
    ),
    "pgbroker_subscribe": (c_int, [POINTER(BrokerHandle), c_char_p, c_char_p, ErrOut]),
    "pgbroker_read": (
        c_int,
        [POINTER(BrokerHandle), c_char_p, c_size_t, POINTER(POINTER(BatchHandle)), ErrOut],
    ),
    "pgbroker_ack": (c_int, [POINTER(BrokerHandle), POINTER(BatchHandle), ErrOut]),
    "pgbroker_batch_len": (c_size_t, [POINTER(BatchHandle)]),
    "pgbroker_batch_subscription": (c_char_p, [POINTER(BatchHandle)]),
    "pgbroker_batch_attempt": (c_uint32, [POINTER(BatchHandle)]),
    "pgbroker_batch_event_id": (c_int64, [POINTER(BatchHandle), c_size_t]),
    "pgbroker_batch_topic": (c_char_p, [POINTER(BatchHandle), c_size_t]),
    "pgbroker_batch_payload": (c_char_p, [POINTER(BatchHandle), c_size_t]),
    "pgbroker_batch_key": (c_char_p, [POINTER(BatchHandle), c_size_t]),
    "pgbroker_batch_free": (None, [POINTER(BatchHandle)]),
    # queue
    "pgbroker_enqueue": (
        c_int,
        [
            POINTER(BrokerHandle),
            c_char_p,
            c_char_p,
            POINTER(JobOptions),
            POINTER(c_int64),
            ErrOut,
        ],
    ),
    "pgbroker_claim": (
        c_int,
        [
            POINTER(BrokerHandle),
            c_char_p,
            c_size_t,
            c_uint64,
            POINTER(POINTER(JobsHandle)),
            ErrOut,
        ],
    ),
    "pgbroker_complete": (c_int, [POINTER(BrokerHandle), POINTER(JobHandle), ErrOut]),
    "pgbroker_fail": (c_int, [POINTER(BrokerHandle), POINTER(JobHandle), c_char_p, ErrOut]),
    "pgbroker_jobs_len": (c_size_t, [POINTER(JobsHandle)]),
    "pgbroker_jobs_get": (POINTER(JobHandle), [POINTER(JobsHandle), c_size_t]),
    "pgbroker_jobs_free": (None, [POINTER(JobsHandle)]),
    "pgbroker_job_id": (c_int64, [POINTER(JobHandle)]),
    "pgbroker_job_queue": (c_char_p, [POINTER(JobHandle)]),
    "pgbroker_job_payload": (c_char_p, [POINTER(JobHandle)]),
    "pgbroker_job_attempt": (c_int32, [POINTER(JobHandle)]),
    "pgbroker_job_max_attempts": (c_int32, [POINTER(JobHandle)]),
    "pgbroker_job_priority": (c_int32, [POINTER(JobHandle)]),
    "pgbroker_job_unique_key": (c_char_p, [POINTER(JobHandle)]),
    # worker pool
    "pgbroker_outcome_set_error": (None, [POINTER(OutcomeHandle), c_char_p]),
    "pgbroker_pool_new": (
        c_int,
        [POINTER(BrokerHandle), c_size_t, c_uint64, POINTER(POINTER(PoolHandle)), ErrOut],
    ),
    "pgbroker_pool_queue": (
        c_int,
        [POINTER(PoolHandle), c_char_p, c_size_t, JOB_CALLBACK, c_void_p, ErrOut],
    ),
    "pgbroker_pool_subscription": (
        c_int,
        [POINTER(PoolHandle), c_char_p, BATCH_CALLBACK, c_void_p, ErrOut],
    ),
    "pgbroker_pool_start": (c_int, [POINTER(PoolHandle), ErrOut]),
    "pgbroker_pool_shutdown": (c_int, [POINTER(PoolHandle), POINTER(PoolStats), ErrOut]),
    "pgbroker_pool_free": (None, [POINTER(PoolHandle)]),
}

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes
