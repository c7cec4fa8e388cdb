"""Synthetic traces from a small grammar, for trying a config on traffic nobody recorded.

A spec is clauses separated by commas; each clause is a shape and ``key=value`` words::

    poisson rate=5/s for 10m              random arrivals, 5 a second on average, for 10 minutes
    steady rate=30/m for 1h at 10m        evenly spaced arrivals, from minute 10 to 1h10m
    burst 500 at 5m                       500 messages at once, 5 minutes in

Every clause also takes ``queue=NAME`` (default: the first queue of the first pool) and
``run=30s`` or ``run=10s-60s`` (each job's run time: fixed, or uniform in the range; default
``10s``). Rates are per ``s``, ``m`` or ``h``; times are durations (``90s``, ``5m``, ``1h30m``).
The same spec and seed always give the same trace.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from scaler.durations import parse_duration
from scaler.replay.trace import EnqueueEvent, Event, Header, JobEndEvent, Trace

__all__ = ["SyntheticError", "synthesize"]

SYNTHETIC_EPOCH = 1_700_000_000.0
"""Where a synthetic trace's clock starts (a fixed value, so reports do not depend on today)."""

_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
_SHAPES = ("poisson", "steady", "burst")
_USAGE = ('e.g. "poisson rate=5/s for 10m, burst 500 at 5m" (shapes: poisson, steady, burst; '
          "keys: rate=, queue=, run=; words: for DURATION, at DURATION)")


class SyntheticError(ValueError):
    """A spec that cannot be read; the message quotes the bad part and what is accepted."""


@dataclass(frozen=True, slots=True)
class _Clause:
    shape: str
    start: float
    duration: float
    rate: float
    count: int
    queue: str
    run: tuple[float, float]


def _duration(text: str, what: str, clause: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SyntheticError(f"{clause!r}: {what} {text!r}: {exc}") from None


def _parse_clause(clause: str, default_queue: str) -> _Clause:
    words = clause.split()
    if not words:
        raise SyntheticError(f"empty clause in the spec; {_USAGE}")
    shape = words[0]
    if shape not in _SHAPES:
        raise SyntheticError(f"{clause!r}: unknown shape {shape!r}; {_USAGE}")
    rate = 0.0
    count = 0
    start = 0.0
    duration: float | None = None
    queue = default_queue
    run = (10.0, 10.0)
    rest = words[1:]
    if shape == "burst":
        if not rest or not rest[0].isdigit():
            raise SyntheticError(f"{clause!r}: burst needs a count, e.g. 'burst 500 at 5m'")
        count = int(rest[0])
        rest = rest[1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("for", "at"):
            if i + 1 >= len(rest):
                raise SyntheticError(f"{clause!r}: {word!r} needs a duration after it")
            value = _duration(rest[i + 1], word, clause)
            if word == "for":
                duration = value
            else:
                start = value
            i += 2
            continue
        key, sep, text = word.partition("=")
        if not sep or not text:
            raise SyntheticError(f"{clause!r}: cannot read {word!r}; {_USAGE}")
        if key == "rate":
            m = _RATE.match(text)
            if not m:
                raise SyntheticError(f"{clause!r}: rate {text!r}; write it as N/s, N/m or N/h")
            rate = float(m.group(1)) / _PER[m.group(2)]
        elif key == "queue":
            queue = text
        elif key == "run":
            low, dash, high = text.partition("-")
            lo = _duration(low, "run", clause)
            hi = _duration(high, "run", clause) if dash else lo
            if hi < lo:
                raise SyntheticError(f"{clause!r}: run {text!r}: the range goes low-high")
            run = (lo, hi)
        else:
            raise SyntheticError(f"{clause!r}: unknown key {key!r}; use rate=, queue= or run=")
        i += 1
    if shape == "burst":
        if duration is not None or rate:
            raise SyntheticError(f"{clause!r}: a burst takes a count and 'at', not rate or 'for'")
        return _Clause(shape, start, 0.0, 0.0, count, queue, run)
    if rate <= 0:
        raise SyntheticError(f"{clause!r}: {shape} needs rate=N/s (or /m, /h), above 0")
    if duration is None:
        raise SyntheticError(f"{clause!r}: {shape} needs 'for DURATION', e.g. 'for 10m'")
    return _Clause(shape, start, duration, rate, 0, queue, run)


def synthesize(spec: str, default_queue: str, seed: int = 0) -> Trace:
    """The trace ``spec`` describes (module docstring), with each job's run time in a ``job``
    event; :class:`SyntheticError` quoting the bad clause otherwise."""
    if not spec.strip():
        raise SyntheticError(f"the spec is empty; {_USAGE}")
    clauses = [_parse_clause(part.strip(), default_queue) for part in spec.split(",")]
    rng = random.Random(seed)
    arrivals: list[tuple[float, str, tuple[float, float]]] = []
    for c in clauses:
        if c.shape == "burst":
            arrivals.extend((c.start, c.queue, c.run) for _ in range(c.count))
        elif c.shape == "steady":
            n = int(c.duration * c.rate)
            arrivals.extend((c.start + k / c.rate, c.queue, c.run) for k in range(n))
        else:
            t = c.start + rng.expovariate(c.rate)
            while t < c.start + c.duration:
                arrivals.append((t, c.queue, c.run))
                t += rng.expovariate(c.rate)
    arrivals.sort(key=lambda a: a[0])
    events: list[Event] = []
    for n, (offset, queue, (lo, hi)) in enumerate(arrivals):
        t = SYNTHETIC_EPOCH + offset
        mid = f"syn-{n:06d}"
        run_s = lo if hi == lo else rng.uniform(lo, hi)
        events.append(EnqueueEvent(t, queue, mid))
        events.append(JobEndEvent(t, queue, mid, "done", enqueued_at=t, run_s=run_s))
    header = Header(SYNTHETIC_EPOCH, source="synthetic", note=f"{spec} (seed {seed})")
    return Trace(header, tuple(sorted(events, key=lambda e: e.t)))
