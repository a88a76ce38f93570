"""The durable log: publish, publish_batch, subscribe, read, ack."""

from __future__ import annotations

import pgbroker


def test_publish_read_ack(broker: pgbroker.Broker, name: str) -> None:
    broker.subscribe(name, f"{name}.*")
    first = broker.publish(f"{name}.created", {"id": 1})
    broker.publish(f"other_{name}.created", {"id": 2})  # not matched
    ids = broker.publish_batch(
        [
            (f"{name}.paid", {"id": 1, "amount": 5}, "customer-7"),
            (f"{name}.shipped", [1, 2]),
            (f"{name}.closed", None, "customer-7"),
        ]
    )
    assert first > 0 and len(ids) == 3 and first < ids[0] < ids[1] < ids[2]
    assert broker.publish_batch([]) == []

    batch = broker.read(name, max=100)
    assert batch.subscription == name
    assert batch.attempt == 0
    assert [e.id for e in batch] == [first, *ids]
    assert [e.topic for e in batch] == [f"{name}.created", f"{name}.paid", f"{name}.shipped",
                                        f"{name}.closed"]
    assert batch[0].payload == {"id": 1}
    assert batch[1].payload_json == '{"id": 1, "amount": 5}'
    assert [e.key for e in batch] == [None, "customer-7", None, "customer-7"]
    assert batch[2].payload == [1, 2] and batch[3].payload is None

    # Reading does not move the cursor; acknowledging does.
    assert [e.id for e in broker.read(name, max=2)] == [first, ids[0]]
    broker.ack(batch)
    after = broker.read(name)
    assert len(after) == 0
    broker.ack(after)
