"""Connecting, and errors: kinds, SQLSTATEs, bad input."""

from __future__ import annotations

import pytest

import pgbroker


def test_version_and_schema_sql() -> None:
    assert pgbroker.__version__
    assert "CREATE SCHEMA IF NOT EXISTS pgbroker" in pgbroker.schema_sql()


def test_malformed_url_is_a_config_error() -> None:
    with pytest.raises(pgbroker.ConfigError) as info:
        pgbroker.Broker("postgres://localhost:notaport/db")
    assert info.value.kind == "config"
    assert info.value.sqlstate is None
    assert info.value.message


def test_unreachable_server_is_a_connect_error(unreachable_url: str) -> None:
    with pytest.raises(pgbroker.ConnectError) as info:
        pgbroker.Broker(unreachable_url)
    assert info.value.kind == "connect"
    assert "connect" in str(info.value)


def test_missing_database_carries_its_sqlstate(database_url: str) -> None:
    url = database_url.rsplit("/", 1)[0] + "/pgbroker_py_no_such_database"
    with pytest.raises(pgbroker.ConnectError) as info:
        pgbroker.Broker(url)
    assert info.value.sqlstate == "3D000"
    assert "does not exist" in info.value.message
    assert "[sqlstate 3D000]" in str(info.value)


def test_a_nul_character_is_refused_before_anything_is_sent(
    broker: pgbroker.Broker, name: str
) -> None:
    with pytest.raises(pgbroker.InvalidInputError) as info:
        broker.publish(f"{name}.nul", {"a": "\u0000"})
    assert info.value.kind == "invalid_input"
    assert "NUL character" in info.value.message
    assert info.value.sqlstate is None


def test_bad_json_is_a_serialize_error(broker: pgbroker.Broker, name: str) -> None:
    with pytest.raises(pgbroker.SerializeError) as info:
        broker.publish(f"{name}.x", pgbroker.RawJSON("{not json"))
    assert "`json` is not valid JSON" in info.value.message
    assert isinstance(info.value, ValueError)
    with pytest.raises(pgbroker.SerializeError):
        broker.enqueue(name, float("nan"))  # json.dumps writes NaN, which is not JSON
    with pytest.raises(pgbroker.SerializeError) as batch_info:
        broker.publish_batch([(f"{name}.a", 1), (f"{name}.b", pgbroker.RawJSON("{"))])
    assert "`events[1].json`" in batch_info.value.message


def test_bad_names_and_values(broker: pgbroker.Broker, name: str) -> None:
    with pytest.raises(pgbroker.InvalidNameError):
        broker.notify("", "x")
    with pytest.raises(pgbroker.InvalidNameError):
        broker.enqueue("bad queue!", {})
    with pytest.raises(pgbroker.PayloadTooLargeError):
        broker.notify(name, "x" * 9000)
    with pytest.raises(pgbroker.InvalidInputError):
        broker.enqueue(name, {}, delay=-1)
    with pytest.raises(pgbroker.InvalidInputError):
        broker.claim(name, lease=0)
    with pytest.raises(pgbroker.NotFoundError):
        broker.read(f"{name}_missing")


def test_closed_broker_refuses_calls(database_url: str) -> None:
    b = pgbroker.Broker(database_url)
    b.close()
    b.close()  # idempotent
    assert b.closed
    with pytest.raises(pgbroker.ShutdownError):
        b.notify("c", "x")
