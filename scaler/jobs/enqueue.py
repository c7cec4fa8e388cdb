"""The enqueue side of the job contract, shared by the scaler and the app toolkit
(``workers.enqueue`` re-exports it for apps).

- :class:`ScalerMiddleware` (add it to the app's broker before declaring actors):

  * stamps ``options["enqueued_at"]`` (ms; for a delayed message, the time it becomes due) so the
    scaler can measure queue latency;
  * stamps ``options["max_age"]`` with the actor's ``max_age`` (or the broker's ``AgeLimit``
    default) when the message has none, as dramatiq's AgeLimit would read it, so that the scaler
    dead-letters a message already too old when it would claim it, instead of paying a machine
    only for AgeLimit to skip it;
  * after an immediate enqueue, ``PUBLISH {prefix}:wake <queue>`` so the scaler wakes at once
    (best effort: a failed publish never fails the enqueue);
  * accepts an actor option ``machine={"cpus": 2, "memory_mb": 1024, "region": "ord"}``, checked
    when the actor is declared and copied into ``message.options["fly_machine"]`` unless the
    message carries its own.

- :func:`redis_broker_from_env`: the app's ``RedisBroker`` as the scaler's machines configure it
  (``REDIS_URL``, ``FLY_SCALER_NAMESPACE``, ``FLY_SCALER_PREFIX``), with the middleware added.
- :func:`send_with_machine`: send a message with per-job machine options, validated now so a
  bad size never reaches the queue.
- :func:`validate_machine_options`: the same check for a dict, the only one there is: the HTTP
  enqueue API uses it, and the scaler checks each claimed message with it (the planner
  dead-letters a message that bypassed the helper with bad options).

Machine options: ``size`` (a Fly preset such as ``"performance-2x"``), ``cpus``, ``memory_mb``,
``cpu_kind``, ``region`` (three lowercase letters). They normalize to ``cpu_kind``, ``cpus``,
``memory_mb`` (and ``region`` when given).

Light to import: the sizing rules are loaded only when options are validated.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.common import current_millis, q_name
from dramatiq.middleware import AgeLimit, MiddlewareError

from scaler.jobs.claims import wake_channel

__all__ = [
    "MACHINE_OPTION_KEYS",
    "ActorMachineError",
    "MachineOptionsError",
    "ScalerMiddleware",
    "redis_broker_from_env",
    "send_with_machine",
    "validate_machine_options",
]

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

log = logging.getLogger(__name__)

MACHINE_OPTION_KEYS = frozenset({"size", "cpus", "memory_mb", "cpu_kind", "region"})
_REGION = re.compile(r"[a-z]{3}")


class MachineOptionsError(ValueError):
    """Per-job machine options that cannot be used. ``field`` names the offending option."""

    def __init__(self, field: str, value: object, message: str) -> None:
        self.field = field
        self.value = value
        super().__init__(message)


class ActorMachineError(MachineOptionsError, MiddlewareError):
    """An actor's ``machine`` option is invalid (raised when the actor is declared)."""


def validate_machine_options(
    opts: Mapping[str, Any], *, field: str = "fly_machine"
) -> dict[str, Any]:
    """Check per-job machine options and return them normalized.

    Raises :class:`MachineOptionsError` (unknown key, wrong type, bad region) or
    ``scaler.fly.sizing.SizingError`` (a size Fly refuses); both are ``ValueError`` and name the
    field, e.g. ``fly_machine.memory_mb``.
    """
    if not isinstance(opts, Mapping):
        raise MachineOptionsError(
            field, opts, f"{field} must be a dict like {{'cpus': 2, 'memory_mb': 1024}}"
        )
    unknown = sorted(set(opts) - MACHINE_OPTION_KEYS)
    if unknown:
        raise MachineOptionsError(
            f"{field}.{unknown[0]}",
            opts[unknown[0]],
            f"{field}.{unknown[0]} is not a machine option: use "
            + ", ".join(sorted(MACHINE_OPTION_KEYS)),
        )
    for key in ("cpus", "memory_mb"):
        value = opts.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MachineOptionsError(
                f"{field}.{key}", value, f"{field}.{key} must be an integer, got {value!r}"
            )
    for key in ("size", "cpu_kind", "region"):
        value = opts.get(key)
        if value is not None and not isinstance(value, str):
            raise MachineOptionsError(
                f"{field}.{key}", value, f"{field}.{key} must be a string, got {value!r}"
            )
    region = opts.get("region")
    if region is not None and not _REGION.fullmatch(region):
        raise MachineOptionsError(
            f"{field}.region",
            region,
            f"{field}.region={region!r} is not a Fly region code: use three lowercase letters"
            " such as 'ord' or 'ams'",
        )
    from scaler.fly.sizing import guest_for  # deferred: pydantic models are heavy to import

    guest = guest_for(
        size=opts.get("size"),
        cpus=opts.get("cpus"),
        memory_mb=opts.get("memory_mb"),
        cpu_kind=opts.get("cpu_kind"),
        field=field,
    )
    out: dict[str, Any] = {
        "cpu_kind": guest.cpu_kind,
        "cpus": guest.cpus,
        "memory_mb": guest.memory_mb,
    }
    if region is not None:
        out["region"] = region
    return out


def send_with_machine(
    actor: dramatiq.Actor[Any, Any],
    *args: Any,
    size: str | None = None,
    cpus: int | None = None,
    memory_mb: int | None = None,
    cpu_kind: str | None = None,
    region: str | None = None,
    delay: int | None = None,
    **kwargs: Any,
) -> dramatiq.Message[Any]:
    """Send ``actor(*args, **kwargs)`` to run on a machine of the given size.

    Validates first (raising ``ValueError`` naming the field), so a bad size never reaches the
    queue. ``delay`` is in milliseconds, as in dramatiq.
    """
    given = {
        k: v
        for k, v in {
            "size": size,
            "cpus": cpus,
            "memory_mb": memory_mb,
            "cpu_kind": cpu_kind,
            "region": region,
        }.items()
        if v is not None
    }
    machine = validate_machine_options(given)
    message: dramatiq.Message[Any] = actor.send_with_options(
        args=args, kwargs=kwargs, delay=delay, fly_machine=machine
    )
    return message


class ScalerMiddleware(dramatiq.Middleware):
    """Stamps ``enqueued_at`` and ``max_age``, wakes the scaler on enqueue and carries per-actor
    machine options."""

    def __init__(self, prefix: str = "fly-scaler") -> None:
        self.prefix = prefix
        self.channel = wake_channel(prefix)

    @property
    def actor_options(self) -> set[str]:
        """``machine``: default per-job machine options for an actor's messages."""
        return {"machine"}

    def before_declare_actor(
        self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]
    ) -> None:
        """Validate an actor's ``machine`` option when the actor is declared."""
        machine = actor.options.get("machine")
        if machine is None:
            return
        try:
            actor.options["machine"] = validate_machine_options(
                machine, field=f"{actor.actor_name}.machine"
            )
        except ValueError as exc:
            # dramatiq swallows middleware errors other than MiddlewareError
            field = getattr(exc, "field", f"{actor.actor_name}.machine")
            raise ActorMachineError(field, machine, str(exc)) from exc

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        """Stamp ``enqueued_at`` and ``max_age``; copy the actor's ``machine`` option into the
        message."""
        # The stamp is when the message becomes ready, so a delay or retry backoff is not
        # counted as queue latency.
        message.options["enqueued_at"] = current_millis() + (delay or 0)
        actor = broker.actors.get(message.actor_name)
        if not message.options.get("max_age"):
            max_age = _max_age(broker, actor)
            if max_age:
                message.options["max_age"] = max_age
        if "fly_machine" in message.options:
            return
        machine = actor.options.get("machine") if actor is not None else None
        if machine is not None:
            message.options["fly_machine"] = dict(machine)

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        """Publish the queue name on ``{prefix}:wake`` (immediate enqueues only)."""
        if delay:
            return
        client = getattr(broker, "client", None)
        if client is None:
            return
        try:
            client.publish(self.channel, q_name(message.queue_name))
        except Exception as exc:  # the enqueue already succeeded; the wake is only a hint
            log.debug("fly-scaler wake publish failed: %s", type(exc).__name__)


def _max_age(broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any] | None) -> int | None:
    """The max_age dramatiq's AgeLimit would apply to the actor's messages: the actor's option,
    else the broker's AgeLimit default (``None``: no limit, or no AgeLimit at all)."""
    limits = [m for m in broker.middleware if isinstance(m, AgeLimit)]
    if not limits:
        return None
    default = limits[0].max_age
    value = actor.options.get("max_age", default) if actor is not None else default
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def redis_broker_from_env(
    env: Mapping[str, str] = os.environ, *, set_default: bool = True
) -> RedisBroker:
    """A ``RedisBroker`` for an app's actors module, configured the way machines are: ``REDIS_URL``
    (default ``redis://127.0.0.1:6379/0``), ``FLY_SCALER_NAMESPACE`` (the dramatiq namespace,
    default ``dramatiq``) and ``FLY_SCALER_PREFIX`` (default ``fly-scaler``), with
    :class:`ScalerMiddleware` added; made dramatiq's default broker unless ``set_default=False``.
    """
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        namespace=env.get("FLY_SCALER_NAMESPACE", "dramatiq"),
    )
    broker.add_middleware(ScalerMiddleware(prefix=env.get("FLY_SCALER_PREFIX", "fly-scaler")))
    if set_default:
        dramatiq.set_broker(broker)
    return broker
