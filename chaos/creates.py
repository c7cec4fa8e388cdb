"""Reading the local API's create log: which job each create call was for, and when."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from scaler.loop.machines import META_JOB, META_POOL

__all__ = ["calls_per_job", "job_of", "pool_of"]


def _meta(call: dict[str, Any]) -> dict[str, Any]:
    md = call.get("metadata")
    return md if isinstance(md, dict) else {}


def job_of(call: dict[str, Any]) -> str | None:
    """The job (``redis_message_id``) a create call was for, if any."""
    job = _meta(call).get(META_JOB)
    return str(job) if job else None


def pool_of(call: dict[str, Any]) -> str | None:
    """The pool a create call was for, if any."""
    pool = _meta(call).get(META_POOL)
    return str(pool) if pool else None


def calls_per_job(calls: Iterable[dict[str, Any]]) -> Counter[str]:
    """Create calls per job, whatever their answer."""
    return Counter(j for c in calls if (j := job_of(c)) is not None)
