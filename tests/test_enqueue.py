"""The app-side helpers: machine options, the enqueue middleware, send_with_machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from scaler.fly.sizing import SizingError
from workers.enqueue import (
    ActorMachineError,
    MachineOptionsError,
    ScalerMiddleware,
    redis_broker_from_env,
    send_with_machine,
    validate_machine_options,
)

Q = "jobs"


@pytest.fixture
def ns(redis_prefix: str) -> str:
    return f"{redis_prefix}-ns"


@pytest.fixture
def broker(redis_url: str, ns: str, redis_prefix: str) -> Iterator[RedisBroker]:
    b = RedisBroker(url=redis_url, namespace=ns)  # type: ignore[no-untyped-call]
    b.add_middleware(ScalerMiddleware(prefix=redis_prefix))
    yield b
    b.client.close()


def stored(client: redis.Redis, ns: str, message: dramatiq.Message[Any]) -> dict[str, Any]:
    queue = message.queue_name
    raw = client.hget(f"{ns}:{queue}.msgs", message.options["redis_message_id"])
    assert raw is not None
    body: dict[str, Any] = json.loads(raw)
    return body


def test_validate_normalizes_presets_and_explicit_shapes() -> None:
    assert validate_machine_options({"size": "performance-2x", "region": "ord"}) == {
        "cpu_kind": "performance",
        "cpus": 2,
        "memory_mb": 4096,
        "region": "ord",
    }
    assert validate_machine_options({"cpus": 2, "memory_mb": 1024}) == {
        "cpu_kind": "shared",
        "cpus": 2,
        "memory_mb": 1024,
    }


@pytest.mark.parametrize(
    ("opts", "field", "error"),
    [
        ({"gpu": 1}, "fly_machine.gpu", MachineOptionsError),
        ({"cpus": "2"}, "fly_machine.cpus", MachineOptionsError),
        ({"cpus": True}, "fly_machine.cpus", MachineOptionsError),
        ({"region": "Chicago"}, "fly_machine.region", MachineOptionsError),
        ({"cpus": 3}, "fly_machine.cpus", SizingError),
        ({"cpus": 1, "memory_mb": 100}, "fly_machine.memory_mb", SizingError),
    ],
)
def test_validate_names_the_bad_field(
    opts: dict[str, Any], field: str, error: type[ValueError]
) -> None:
    with pytest.raises(error) as info:
        validate_machine_options(opts)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert field in str(info.value)


def test_send_with_machine_validates_before_enqueue(
    broker: RedisBroker, redis_client: redis.Redis, ns: str
) -> None:
    @dramatiq.actor(broker=broker, queue_name=Q)
    def work(x: int) -> None:
        """Not run here."""

    sent = send_with_machine(work, 1, cpus=2, memory_mb=2048, region="ams")
    body = stored(redis_client, ns, sent)
    assert body["args"] == [1]
    assert body["options"]["fly_machine"] == {
        "cpu_kind": "shared",
        "cpus": 2,
        "memory_mb": 2048,
        "region": "ams",
    }
    with pytest.raises(SizingError, match=r"fly_machine\.cpus"):
        send_with_machine(work, 2, cpus=5)
    assert redis_client.llen(f"{ns}:{Q}") == 1  # the bad one never reached the queue


def test_middleware_stamps_copies_actor_machine_and_publishes(
    broker: RedisBroker, redis_client: redis.Redis, ns: str, redis_prefix: str
) -> None:
    @dramatiq.actor(broker=broker, queue_name=Q, machine={"size": "shared-cpu-2x"})
    def big() -> None:
        """Not run here."""

    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(f"{redis_prefix}:wake")
    try:
        confirmed = pubsub.get_message(timeout=5)
        assert confirmed is not None
        assert confirmed["type"] == "subscribe"
        sent = big.send()
        wake = pubsub.get_message(timeout=5)
        assert wake is not None
        assert wake["data"] == Q.encode()
    finally:
        pubsub.close()
    body = stored(redis_client, ns, sent)
    assert body["options"]["fly_machine"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert body["options"]["enqueued_at"] >= body["message_timestamp"]
    own = big.send_with_options(fly_machine={"cpus": 4})
    assert stored(redis_client, ns, own)["options"]["fly_machine"] == {"cpus": 4}


def test_middleware_stamps_the_max_age_agelimit_would_apply(
    broker: RedisBroker, redis_client: redis.Redis, ns: str
) -> None:
    from dramatiq.middleware import AgeLimit

    @dramatiq.actor(broker=broker, queue_name=Q, max_age=30_000)
    def short_lived() -> None:
        """Not run here."""

    @dramatiq.actor(broker=broker, queue_name=Q)
    def plain() -> None:
        """Not run here."""

    assert stored(redis_client, ns, short_lived.send())["options"]["max_age"] == 30_000
    own = short_lived.send_with_options(max_age=5_000)
    assert stored(redis_client, ns, own)["options"]["max_age"] == 5_000
    assert "max_age" not in stored(redis_client, ns, plain.send())["options"]
    [limit] = [m for m in broker.middleware if isinstance(m, AgeLimit)]
    limit.max_age = 60_000  # the broker's default applies to actors without their own
    assert stored(redis_client, ns, plain.send())["options"]["max_age"] == 60_000


def test_delayed_messages_are_stamped_with_their_due_time(
    broker: RedisBroker, redis_client: redis.Redis, ns: str
) -> None:
    sent = broker.enqueue(dramatiq.Message(Q, "a", (), {}, {}), delay=60_000)
    body = stored(redis_client, ns, sent)
    assert body["options"]["enqueued_at"] >= body["options"]["eta"] - 5


def test_bad_actor_machine_option_fails_at_declaration(broker: RedisBroker) -> None:
    with pytest.raises(ActorMachineError, match=r"oops\.machine\.cpus") as info:

        @dramatiq.actor(broker=broker, queue_name=Q, machine={"cpus": 3})
        def oops() -> None:
            """Never declared."""

    assert info.value.field == "oops.machine.cpus"
    assert "oops" not in broker.actors


def test_a_failed_publish_never_fails_the_enqueue(
    broker: RedisBroker, redis_client: redis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object) -> None:
        raise redis.ConnectionError("pubsub unavailable")

    monkeypatch.setattr(broker.client, "publish", down)
    broker.enqueue(dramatiq.Message(Q, "a", (), {}, {}))
    assert redis_client.llen(f"{ns}:{Q}") == 1


def test_redis_broker_from_env_configures_namespace_and_wakeups(
    redis_url: str, redis_prefix: str
) -> None:
    previous = dramatiq.get_broker()
    try:
        b = redis_broker_from_env(
            {"REDIS_URL": redis_url, "FLY_SCALER_NAMESPACE": f"{redis_prefix}-ns",
             "FLY_SCALER_PREFIX": f"{redis_prefix}-p"},
        )
        assert dramatiq.get_broker() is b
        assert b.namespace == f"{redis_prefix}-ns"
        [mw] = [m for m in b.middleware if isinstance(m, ScalerMiddleware)]
        assert mw.channel == f"{redis_prefix}-p:wake"
        other = redis_broker_from_env({"REDIS_URL": redis_url}, set_default=False)
        assert dramatiq.get_broker() is b and other.namespace == "dramatiq"
        b.client.close()
        other.client.close()
    finally:
        dramatiq.set_broker(previous)
