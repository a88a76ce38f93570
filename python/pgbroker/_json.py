"""How Python values become the JSON text the C ABI takes."""

from __future__ import annotations

import json
from typing import Any


class RawJSON(str):
    """JSON text passed through as is (not encoded again): ``RawJSON('{"id": 1}')``.

    pgbroker checks it; text that is not JSON raises :class:`pgbroker.SerializeError`.
    """


def encode(value: Any) -> bytes:
    """``value`` as UTF-8 JSON text: a :class:`RawJSON` as is, anything else by ``json.dumps``
    (which writes ``NaN`` for a float NaN: pgbroker then rejects it as not JSON)."""
    if isinstance(value, RawJSON):
        return str(value).encode()
    return json.dumps(value).encode()


def text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
