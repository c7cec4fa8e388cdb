"""The local Machines API's wall clock: real time plus the ``clock.offset`` fault.

Every timestamp the API reports (machine ``created_at``/``updated_at``, events, leases, app and
volume times, the ``Date`` header) comes from :func:`wall`, so an offset makes the API look like a
Fly whose clock differs from its client's. The offset belongs to the process (the ``scaler
local-api`` command serves one API): :func:`set_offset` is called by the API whose fault spec
changes it, and reset when that API shuts down.
"""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = ["http_date", "offset", "set_offset", "wall"]

_offset = 0.0


def wall() -> float:
    """Unix seconds as the API reports them."""
    return time.time() + _offset


def offset() -> float:
    """Seconds the API's clock is ahead of the real one (negative: behind)."""
    return _offset


def set_offset(seconds: float) -> None:
    """Shift the API's clock by ``seconds`` from now on (stamps already taken keep theirs)."""
    global _offset
    _offset = float(seconds)


def http_date() -> str:
    """The ``Date`` header value for now, in the API's clock (RFC 9110 IMF-fixdate)."""
    return formatdate(wall(), usegmt=True)
