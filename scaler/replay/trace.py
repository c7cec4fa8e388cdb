"""The trace format: JSON Lines, a header line first, every line an object with a ``type``.

Version 1 (docs/replay.md has the full table)::

    {"type": "header", "format": "fly-scaler-trace", "version": 1, "started_at": ..., ...}
    {"type": "enqueue", "t": ..., "queue": "q", "message_id": "...", "options": {...}}
    {"type": "job", "t": ..., "queue": "q", "message_id": "...", "outcome": "done", ...}
    {"type": "machine", "t": ..., "event": "created" | "started" | "gone", "machine_id": ...}

``t`` is seconds since the epoch. Lines are written in the order they were observed; readers
sort by ``t``. Unknown keys are ignored; an unknown ``type`` or a newer version is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "VERSION",
    "EnqueueEvent",
    "Event",
    "Header",
    "JobEndEvent",
    "MachineEvent",
    "Trace",
    "TraceError",
    "dump_line",
    "parse_lines",
    "read_trace",
    "write_trace",
]

FORMAT = "fly-scaler-trace"
VERSION = 1
MACHINE_EVENTS = ("created", "started", "gone")


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line and the field."""


@dataclass(frozen=True, slots=True)
class Header:
    """The first line: what wrote the trace and when it started."""

    started_at: float
    source: str = "record"
    scaler_id: str = ""
    note: str = ""
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class EnqueueEvent:
    """A message became ready on ``queue`` at ``t`` (its ``enqueued_at`` stamp), with the
    message's own machine options (``fly_machine``), if any."""

    t: float
    queue: str
    message_id: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobEndEvent:
    """A job ended at ``t``: the runner's job-end event (``scaler.jobs.outcomes.JobEvent``)."""

    t: float
    queue: str
    message_id: str
    outcome: str
    pool: str = ""
    enqueued_at: float | None = None
    started_at: float | None = None
    run_s: float | None = None
    machine_id: str | None = None
    launch: int | None = None


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """One of our machines was ``created``, ``started`` or ``gone`` at ``t``, by Fly's clock
    where the listing carries it."""

    t: float
    event: str
    machine_id: str
    app: str
    pool: str | None = None
    size: str = ""
    memory_mb: int = 0


Event = EnqueueEvent | JobEndEvent | MachineEvent


@dataclass(frozen=True, slots=True)
class Trace:
    """A header and its events, sorted by time."""

    header: Header
    events: tuple[Event, ...]

    @property
    def enqueues(self) -> tuple[EnqueueEvent, ...]:
        """The enqueue events, in time order."""
        return tuple(e for e in self.events if isinstance(e, EnqueueEvent))

    @property
    def jobs(self) -> tuple[JobEndEvent, ...]:
        """The job-end events, in time order."""
        return tuple(e for e in self.events if isinstance(e, JobEndEvent))

    @property
    def machines(self) -> tuple[MachineEvent, ...]:
        """The machine events, in time order."""
        return tuple(e for e in self.events if isinstance(e, MachineEvent))


def _line_of(obj: Header | Event) -> dict[str, Any]:
    if isinstance(obj, Header):
        return {"type": "header", "format": FORMAT, "version": obj.version,
                "started_at": obj.started_at, "source": obj.source,
                "scaler_id": obj.scaler_id, "note": obj.note}
    kind = {EnqueueEvent: "enqueue", JobEndEvent: "job", MachineEvent: "machine"}[type(obj)]
    out: dict[str, Any] = {"type": kind}
    for name in obj.__slots__:
        value = getattr(obj, name)
        if value is not None and value != "" and value != {}:
            out[name] = value
    return out


def dump_line(obj: Header | Event) -> str:
    """One line of the trace (with its newline)."""
    return json.dumps(_line_of(obj), separators=(",", ":"), sort_keys=True) + "\n"


def write_trace(path: str | Path, header: Header, events: Iterable[Event]) -> None:
    """Write a whole trace to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_line(header))
        for event in events:
            fh.write(dump_line(event))


def _num(data: dict[str, Any], key: str, where: str, *, required: bool = True) -> float | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TraceError(f"{where}: {key} is {value!r}; expected a number of seconds")
    return float(value)


def _str(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise TraceError(f"{where}: {key} is {value!r}; expected a non-empty string")
    return value


def _parse_event(data: dict[str, Any], where: str) -> Event:
    kind = data.get("type")
    t = _num(data, "t", where)
    assert t is not None
    if kind == "enqueue":
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise TraceError(f"{where}: options is {options!r}; expected an object")
        return EnqueueEvent(t, _str(data, "queue", where), _str(data, "message_id", where),
                            options)
    if kind == "job":
        launch = data.get("launch")
        return JobEndEvent(
            t, _str(data, "queue", where), _str(data, "message_id", where),
            _str(data, "outcome", where), pool=str(data.get("pool") or ""),
            enqueued_at=_num(data, "enqueued_at", where, required=False),
            started_at=_num(data, "started_at", where, required=False),
            run_s=_num(data, "run_s", where, required=False),
            machine_id=data.get("machine_id") or None,
            launch=int(launch) if isinstance(launch, int) else None,
        )
    if kind == "machine":
        event = _str(data, "event", where)
        if event not in MACHINE_EVENTS:
            raise TraceError(f"{where}: event is {event!r}; expected one of "
                             f"{', '.join(MACHINE_EVENTS)}")
        return MachineEvent(t, event, _str(data, "machine_id", where), _str(data, "app", where),
                            pool=data.get("pool") or None, size=str(data.get("size") or ""),
                            memory_mb=int(data.get("memory_mb") or 0))
    raise TraceError(f"{where}: type is {kind!r}; expected enqueue, job or machine")


def parse_lines(lines: Iterable[str], name: str = "trace") -> Trace:
    """A trace from its lines (see the module docstring); :class:`TraceError` on bad input."""
    header: Header | None = None
    events: list[Event] = []
    for number, raw in enumerate(lines, 1):
        where = f"{name} line {number}"
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not JSON ({exc.msg}); each line is one JSON object") \
                from None
        if not isinstance(data, dict):
            raise TraceError(f"{where}: not a JSON object; each line is one JSON object")
        if header is None:
            if data.get("type") != "header" or data.get("format") != FORMAT:
                raise TraceError(f"{where}: the first line must be the header "
                                 f'{{"type": "header", "format": "{FORMAT}", ...}}')
            version = data.get("version")
            if not isinstance(version, int) or not 1 <= version <= VERSION:
                raise TraceError(f"{where}: version is {version!r}; this scaler reads "
                                 f"versions 1 to {VERSION}")
            started = _num(data, "started_at", where)
            assert started is not None
            header = Header(started, source=str(data.get("source") or ""),
                            scaler_id=str(data.get("scaler_id") or ""),
                            note=str(data.get("note") or ""), version=version)
            continue
        if data.get("type") == "header":
            continue  # a rotated file appended to another: its header repeats
        events.append(_parse_event(data, where))
    if header is None:
        raise TraceError(f"{name}: empty; a trace starts with its header line")
    events.sort(key=lambda e: e.t)
    return Trace(header, tuple(events))


def read_trace(path: str | Path) -> Trace:
    """Read a trace file; :class:`TraceError` naming the line on bad input."""
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_lines(fh, str(path))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
