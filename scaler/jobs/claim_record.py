"""One claim record as the scaler reads it (:class:`Claim`; its fields are documented in
:mod:`scaler.jobs.claims`), and a claim's identity on Fly: the deterministic name of its machine and
the env that binds that machine to it (or, on a warm slot, says the job is found by machine id)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SLOT_ENV", "Claim", "binding_env", "machine_name", "slot_env"]

SLOT_ENV = "FLY_SCALER_SLOT"
"""``1`` in a warm slot's env: only then does the runner look its job up by machine id, so a
per-job machine whose binding env is missing fails as a set-up error, not as an idle slot."""


def machine_name(pool: str, redis_message_id: str, launch: int) -> str:
    """The deterministic machine name of a claim's launch (the create idempotency key)."""
    return f"{pool}-{redis_message_id.replace('-', '')}-{launch}"


@dataclass(frozen=True)
class Claim:
    """One claimed message, as stored in ``{p}:claims:{q}``.

    ``message`` is the decoded dramatiq message: filled by
    :meth:`scaler.jobs.claims.ClaimStore.claim` and by its ``list_claims`` with
    ``with_messages=True``; ``{}`` when the body is gone or
    is not valid JSON (such a message can only be dead-lettered).
    """

    redis_message_id: str
    pool: str
    queue: str
    message_id: str
    launch: int
    claimed_at: int
    machine_name: str
    state: str = "claimed"
    machine_id: str | None = None
    started_at: int | None = None
    heartbeat_at: int | None = None
    updated_at: int | None = None
    enqueued_at: int | None = None
    app: str | None = None
    create_until: int | None = None
    attempts: int = 1
    failed_at: int | None = None
    last_error: str | None = None
    refused: str | None = None
    message: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def machine_options(self) -> dict[str, Any] | None:
        """The message's per-job machine options (``options.fly_machine``), if any."""
        options = self.message.get("options")
        if not isinstance(options, dict):
            return None
        value = options.get("fly_machine")
        return dict(value) if isinstance(value, dict) else None

    @classmethod
    def from_record(
        cls, redis_message_id: str, record: str | bytes, body: str | bytes | None = None
    ) -> Claim:
        """Build a claim from its stored JSON record and (optionally) the message body."""
        data = json.loads(record)
        message: dict[str, Any] = {}
        if body is not None:
            try:
                decoded = json.loads(body)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                message = decoded
        return cls(
            redis_message_id=redis_message_id,
            pool=str(data["pool"]),
            queue=str(data["queue"]),
            message_id=str(data["message_id"]),
            launch=int(data["launch"]),
            claimed_at=int(data["claimed_at"]),
            machine_name=str(data["machine_name"]),
            state=str(data.get("state", "claimed")),
            machine_id=_opt_str(data.get("machine_id")),
            started_at=_opt_int(data.get("started_at")),
            heartbeat_at=_opt_int(data.get("heartbeat_at")),
            updated_at=_opt_int(data.get("updated_at")),
            enqueued_at=_opt_int(data.get("enqueued_at")),
            app=_opt_str(data.get("app")),
            create_until=_opt_int(data.get("create_until")),
            attempts=int(data.get("attempts") or 1),
            failed_at=_opt_int(data.get("failed_at")),
            last_error=_opt_str(data.get("last_error")),
            refused=_opt_str(data.get("refused")),
            message=message,
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def binding_env(
    queue: str, redis_message_id: str, launch: int, *, namespace: str, prefix: str
) -> dict[str, str]:
    """The env that binds a per-job machine to its claim (the runner reads it)."""
    return {
        "FLY_SCALER_QUEUE": queue,
        "FLY_SCALER_MESSAGE": redis_message_id,
        "FLY_SCALER_NAMESPACE": namespace,
        "FLY_SCALER_PREFIX": prefix,
        "FLY_SCALER_LAUNCH": str(launch),
    }


def slot_env(*, namespace: str, prefix: str) -> dict[str, str]:
    """The env of a warm slot: no job (the runner finds the one bound to its ``FLY_MACHINE_ID``
    in Redis), and :data:`SLOT_ENV` saying so."""
    return {"FLY_SCALER_NAMESPACE": namespace, "FLY_SCALER_PREFIX": prefix, SLOT_ENV: "1"}
