"""Operations on machines, their metadata and their leases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scaler.fly._operations.call import (
    NONCE_HEADER,
    WAIT_STATES,
    Call,
    Lookup,
    _duration,
    _m,
    _model,
    _models,
    _nonce,
    _nothing,
    _q,
    _required,
    _seg,
    _states,
)
from scaler.fly.models import (
    CreateLeaseRequest,
    CreateMachineRequest,
    FlyMachineConfig,
    Lease,
    Machine,
    MachineEvent,
    MachineVersion,
    SignalRequest,
    StartResponse,
    StopRequest,
    UpdateMachineRequest,
    UpdateMetadataRequest,
    UpsertMetadataKeyRequest,
    WaitResponse,
    parse_lease,
    signal_name,
)
from scaler.fly.models.slim import SlimListing, decode_slim_listing
from scaler.fly.retry import RetryPolicy, Safety
from scaler.fly.sizing import validate_guest

__all__ = [
    "acquire_lease",
    "cordon_machine",
    "create_machine",
    "delete_metadata_key",
    "destroy_machine",
    "get_lease",
    "get_machine",
    "get_metadata",
    "get_metadata_key",
    "list_events",
    "list_machines",
    "list_machines_slim",
    "list_versions",
    "refresh_lease",
    "release_lease",
    "restart_machine",
    "set_metadata_key",
    "signal_machine",
    "start_machine",
    "stop_machine",
    "suspend_machine",
    "uncordon_machine",
    "update_machine",
    "update_metadata",
    "wait_machine",
]


def list_machines(
    app_name: str,
    *,
    include_deleted: bool | None = None,
    include_leases: bool | None = None,
    region: str | None = None,
    state: str | Sequence[str] | None = None,
    summary: bool | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Call[list[Machine]]:
    """List machines; ``metadata`` filters (``metadata.KEY=value``) must all match."""
    params = _list_params(include_deleted, include_leases, region, state, summary, metadata)
    return Call(
        "GET", f"/v1/apps/{_seg(app_name, 'app_name')}/machines", _models(Machine),
        Safety.IDEMPOTENT, params=params,
    )


def list_machines_slim(
    app_name: str,
    *,
    include_deleted: bool | None = None,
    region: str | None = None,
    state: str | Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Call[SlimListing]:
    """:func:`list_machines` read into the slim model: the same request, and of each machine only
    the fields :class:`~scaler.fly.models.slim.ListedMachine` declares (identity, state, region,
    times, events, ``config.metadata`` and ``config.guest.memory_mb``), decoded on demand.

    For callers that read a few fields of many machines (the scaler's tick at thousands of
    machines): the rest of each machine (config, services, checks) is skipped, never built into
    Python objects, and a machine whose JSON did not change can be recognised by its bytes
    (:attr:`~scaler.fly.models.slim.SlimListing.items`).
    """
    params = _list_params(include_deleted, None, region, state, None, metadata)
    return Call(
        "GET", f"/v1/apps/{_seg(app_name, 'app_name')}/machines", decode_slim_listing,
        Safety.IDEMPOTENT, params=params, raw=True,
    )


def _list_params(
    include_deleted: bool | None, include_leases: bool | None, region: str | None,
    state: str | Sequence[str] | None, summary: bool | None, metadata: Mapping[str, str] | None,
) -> list[tuple[str, str]]:
    params = _q(
        include_deleted=include_deleted, include_leases=include_leases, region=region,
        state=None if state is None else _states(state, "state"), summary=summary,
    )
    for key, value in (metadata or {}).items():
        params.append((f"metadata.{key}", str(value)))
    return params


def _newest(machines: Iterable[Machine]) -> Machine | None:
    return max(machines, key=lambda m: m.created_at or "", default=None)


def _lookup_for(app_name: str, request: CreateMachineRequest) -> Lookup | None:
    # Destroyed machines count: a job machine may have run and gone by the time we look.
    name = request.name
    if name:
        return Lookup(
            list_machines(app_name, include_deleted=True),
            lambda ms: _newest(m for m in ms if m.name == name), by=f"name {name!r}",
        )
    wanted = dict(request.config.metadata or {})
    if wanted:
        return Lookup(
            list_machines(app_name, include_deleted=True, metadata=wanted),
            lambda ms: _newest(m for m in ms if wanted.items() <= m.metadata.items()),
            by=f"metadata {sorted(wanted)}",
        )
    return None


def _machine_request(
    cls: type[CreateMachineRequest],
    config: FlyMachineConfig | CreateMachineRequest,
    overrides: dict[str, Any],
) -> CreateMachineRequest:
    base = config if isinstance(config, CreateMachineRequest) else cls(config=config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    request = cls.model_validate({**base.model_dump(exclude_none=True), **changes})
    if request.config.guest is not None:
        validate_guest(request.config.guest, field="config.guest")
    return request


def create_machine(
    app_name: str,
    config: FlyMachineConfig | CreateMachineRequest,
    *,
    name: str | None = None,
    region: str | None = None,
    skip_launch: bool | None = None,
    lease_ttl: int | None = None,
    skip_service_registration: bool | None = None,
    skip_secrets: bool | None = None,
    min_secrets_version: int | None = None,
    retry: RetryPolicy | None = None,
    may_exist: bool = False,
) -> Call[Machine]:
    """Create (and unless ``skip_launch``, boot) a machine; keyword arguments override fields of a
    given request. Never repeated blindly: an unknown outcome is looked up by ``name``, or else by
    ``config.metadata``, before any retry; with neither, :class:`AmbiguousCreate` is raised.
    The metadata must identify this machine alone (e.g. a job id). Fly's listing is eventually
    consistent, so a unique ``name`` is the stronger guard: a retried create then gets a conflict,
    which triggers another lookup instead of a duplicate. ``retry`` replaces the client's retry
    policy for this one call (a caller with its own backoff, like the scaler, retries less here:
    every attempt spends one of the app's create tokens). ``may_exist=True`` says an earlier call
    (another process, an attempt given up on) may have made this very machine: a conflict (409)
    is then looked up from the first attempt on, and the machine found is returned."""
    request = _machine_request(CreateMachineRequest, config, {
        "name": name, "region": region, "skip_launch": skip_launch, "lease_ttl": lease_ttl,
        "skip_service_registration": skip_service_registration, "skip_secrets": skip_secrets,
        "min_secrets_version": min_secrets_version,
    })
    return Call(
        "POST", f"/v1/apps/{_seg(app_name, 'app_name')}/machines", _model(Machine), Safety.CREATE,
        body=request.to_wire(), lookup=_lookup_for(app_name, request), retry=retry,
        may_exist=may_exist,
    )


def get_machine(
    app_name: str, machine_id: str, *, include_leases: bool | None = None
) -> Call[Machine]:
    """One machine (destroyed machines can still be read for a while)."""
    return Call(
        "GET", _m(app_name, machine_id), _model(Machine), Safety.IDEMPOTENT,
        params=_q(include_leases=include_leases),
    )


def update_machine(
    app_name: str,
    machine_id: str,
    config: FlyMachineConfig | UpdateMachineRequest,
    *,
    current_version: str | None = None,
    skip_launch: bool | None = None,
    lease_ttl: int | None = None,
    skip_service_registration: bool | None = None,
    nonce: str | None = None,
) -> Call[Machine]:
    """Replace a machine's whole config; ``current_version`` (its ``instance_id``) makes Fly
    refuse with 409 if someone else updated it first. Not retried on an unknown outcome."""
    request = _machine_request(UpdateMachineRequest, config, {
        "current_version": current_version, "skip_launch": skip_launch, "lease_ttl": lease_ttl,
        "skip_service_registration": skip_service_registration,
    })
    return Call(
        "POST", _m(app_name, machine_id), _model(Machine), Safety.UNSAFE,
        body=request.to_wire(), headers=_nonce(nonce),
    )


def start_machine(
    app_name: str, machine_id: str, *, nonce: str | None = None
) -> Call[StartResponse]:
    """Start a created, stopped or suspended machine."""
    return Call(
        "POST", _m(app_name, machine_id, "/start"), _model(StartResponse), Safety.IDEMPOTENT,
        headers=_nonce(nonce),
    )


def stop_machine(
    app_name: str,
    machine_id: str,
    *,
    signal: str | int | None = None,
    timeout: str | float | None = None,
    nonce: str | None = None,
) -> Call[None]:
    """Stop a machine: send ``signal`` (default SIGINT on Fly's side), kill after ``timeout``
    (seconds, or a Go duration like ``"30s"``)."""
    body = StopRequest(
        signal=None if signal is None else signal_name(signal),
        timeout=_duration(timeout, "timeout"),
    )
    return Call(
        "POST", _m(app_name, machine_id, "/stop"), _nothing, Safety.IDEMPOTENT,
        body=body.to_wire(), headers=_nonce(nonce),
    )


def restart_machine(
    app_name: str,
    machine_id: str,
    *,
    timeout: str | float | None = None,
    signal: str | int | None = None,
    nonce: str | None = None,
) -> Call[None]:
    """Restart a started machine (query parameters ``timeout`` and ``signal``)."""
    return Call(
        "POST", _m(app_name, machine_id, "/restart"), _nothing, Safety.UNSAFE,
        params=_q(
            timeout=_duration(timeout, "timeout"),
            signal=None if signal is None else signal_name(signal),
        ),
        headers=_nonce(nonce),
    )


def suspend_machine(app_name: str, machine_id: str, *, nonce: str | None = None) -> Call[None]:
    """Suspend a started machine (memory snapshot; resumes fast on start)."""
    return Call(
        "POST", _m(app_name, machine_id, "/suspend"), _nothing, Safety.IDEMPOTENT,
        headers=_nonce(nonce),
    )


def signal_machine(
    app_name: str, machine_id: str, signal: str | int, *, nonce: str | None = None
) -> Call[None]:
    """Send a signal (name like ``"SIGUSR1"``, or a number, sent as its name)."""
    body = SignalRequest(signal=signal_name(signal))
    return Call(
        "POST", _m(app_name, machine_id, "/signal"), _nothing, Safety.UNSAFE,
        body=body.to_wire(), headers=_nonce(nonce),
    )


def destroy_machine(
    app_name: str, machine_id: str, *, force: bool = False, nonce: str | None = None
) -> Call[None]:
    """Destroy a machine; without ``force`` it must be stopped or suspended first."""
    return Call(
        "DELETE", _m(app_name, machine_id), _nothing, Safety.IDEMPOTENT,
        params=_q(force=True if force else None), headers=_nonce(nonce),
    )


def wait_machine(
    app_name: str,
    machine_id: str,
    state: str | Sequence[str] = "started",
    *,
    timeout: int = 60,
    version: str | None = None,
    from_event_id: str | None = None,
) -> Call[WaitResponse]:
    """Wait (server side, ``timeout`` 1-60 s) until the machine reaches one of ``state``.

    Raises :class:`RequestTimeout` (408, not retried) when it did not get there in time. Waiting
    for ``stopped`` needs ``version`` (the machine's ``instance_id``) on real Fly.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60:
        raise ValueError(f"timeout={timeout!r} must be whole seconds from 1 to 60 (Fly's limit)")
    states = _states(state, "state")
    unknown = [s for s in states.split(",") if s not in WAIT_STATES]
    if unknown:
        raise ValueError(f"state={unknown[0]!r} is not one of {', '.join(WAIT_STATES)}")
    return Call(
        "GET", _m(app_name, machine_id, "/wait"), _model(WaitResponse), Safety.WAIT,
        params=_q(
            state=states, timeout=timeout, version=version, instance_id=version,
            from_event_id=from_event_id,
        ),
        read_timeout=timeout + 15.0,
    )


def cordon_machine(app_name: str, machine_id: str, *, nonce: str | None = None) -> Call[None]:
    """Take a machine out of Fly Proxy's routing."""
    return Call(
        "POST", _m(app_name, machine_id, "/cordon"), _nothing, Safety.IDEMPOTENT,
        headers=_nonce(nonce),
    )


def uncordon_machine(app_name: str, machine_id: str, *, nonce: str | None = None) -> Call[None]:
    """Put a machine back into Fly Proxy's routing."""
    return Call(
        "POST", _m(app_name, machine_id, "/uncordon"), _nothing, Safety.IDEMPOTENT,
        headers=_nonce(nonce),
    )


def list_events(
    app_name: str, machine_id: str, *, limit: int | None = None
) -> Call[list[MachineEvent]]:
    """A machine's events, newest first (``limit`` default 20, max 50)."""
    if limit is not None and not 1 <= limit <= 50:
        raise ValueError(f"limit={limit} must be from 1 to 50")
    return Call(
        "GET", _m(app_name, machine_id, "/events"), _models(MachineEvent), Safety.IDEMPOTENT,
        params=_q(limit=limit),
    )


def list_versions(app_name: str, machine_id: str) -> Call[list[MachineVersion]]:
    """A machine's config versions."""
    return Call(
        "GET", _m(app_name, machine_id, "/versions"), _models(MachineVersion), Safety.IDEMPOTENT
    )


# --- metadata -----------------------------------------------------------------------------------


def get_metadata(app_name: str, machine_id: str) -> Call[dict[str, str]]:
    """All metadata of a machine."""
    return Call(
        "GET", _m(app_name, machine_id, "/metadata"),
        lambda b: {str(k): str(v) for k, v in (b or {}).items()}, Safety.IDEMPOTENT,
    )


def get_metadata_key(app_name: str, machine_id: str, key: str) -> Call[str]:
    """One metadata value (404 :class:`NotFound` if the key is not set)."""
    return Call(
        "GET", _m(app_name, machine_id, f"/metadata/{_seg(key, 'key')}"),
        lambda b: str((b or {}).get("value", "")), Safety.IDEMPOTENT,
    )


def set_metadata_key(
    app_name: str, machine_id: str, key: str, value: str, *, nonce: str | None = None
) -> Call[None]:
    """Set one metadata key (no reboot)."""
    return Call(
        "POST", _m(app_name, machine_id, f"/metadata/{_seg(key, 'key')}"), _nothing,
        Safety.IDEMPOTENT, body=UpsertMetadataKeyRequest(value=value).to_wire(),
        headers=_nonce(nonce),
    )


def update_metadata(
    app_name: str,
    machine_id: str,
    metadata: Mapping[str, str],
    *,
    machine_version: str | None = None,
    nonce: str | None = None,
) -> Call[None]:
    """Replace a machine's metadata; with ``machine_version``, Fly answers 412
    :class:`PreconditionFailed` if the machine changed meanwhile."""
    body = UpdateMetadataRequest(metadata=dict(metadata), machine_version=machine_version)
    return Call(
        "PUT", _m(app_name, machine_id, "/metadata"), _nothing, Safety.IDEMPOTENT,
        body=body.to_wire(), headers=_nonce(nonce),
    )


def delete_metadata_key(
    app_name: str, machine_id: str, key: str, *, nonce: str | None = None
) -> Call[None]:
    """Remove one metadata key."""
    return Call(
        "DELETE", _m(app_name, machine_id, f"/metadata/{_seg(key, 'key')}"), _nothing,
        Safety.IDEMPOTENT, headers=_nonce(nonce),
    )


# --- leases -------------------------------------------------------------------------------------


def acquire_lease(
    app_name: str, machine_id: str, *, ttl: int, description: str | None = None
) -> Call[Lease]:
    """Take a lease for ``ttl`` seconds (409 :class:`Conflict` if someone else holds one).
    Send the returned ``nonce`` with every mutation while it is held."""
    return Call(
        "POST", _m(app_name, machine_id, "/lease"), parse_lease, Safety.UNSAFE,
        body=CreateLeaseRequest(ttl=ttl, description=description).to_wire(),
    )


def refresh_lease(app_name: str, machine_id: str, nonce: str, *, ttl: int) -> Call[Lease]:
    """Extend the lease identified by ``nonce`` by ``ttl`` seconds."""
    return Call(
        "POST", _m(app_name, machine_id, "/lease"), parse_lease, Safety.IDEMPOTENT,
        body=CreateLeaseRequest(ttl=ttl).to_wire(),
        headers={NONCE_HEADER: _required(nonce, "nonce")},
    )


def get_lease(app_name: str, machine_id: str) -> Call[Lease]:
    """The current lease (404 :class:`NotFound` when there is none)."""
    return Call("GET", _m(app_name, machine_id, "/lease"), parse_lease, Safety.IDEMPOTENT)


def release_lease(app_name: str, machine_id: str, nonce: str) -> Call[None]:
    """Release the lease identified by ``nonce`` (required)."""
    return Call(
        "DELETE", _m(app_name, machine_id, "/lease"), _nothing, Safety.IDEMPOTENT,
        headers={NONCE_HEADER: _required(nonce, "nonce")},
    )
