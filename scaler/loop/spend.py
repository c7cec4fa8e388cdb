"""The spend ledger: what machines cost within the rolling hour, kept in Redis for the budgets.

Every tick the observer accrues, from the listings it just read, each started machine's price x
the time it has been started since the last accrual (or since it started, if later), into the
current minute's bucket (``{p}:spend:{minute}``: ``total``, ``app:{a}``, ``pool:{p}``), then sums
the last 60 buckets into a :class:`~scaler.policy.budget.Spend` for the planner. Buckets and the
time of the last accrual live in Redis, so a restarted scaler or a new leader carries on from the
same hour; the accrual is a compare-and-set on that time, so two replicas never count the same
seconds twice. A gap while no scaler ran is accrued from what the next listing shows, at most an
hour back.

What it cannot see: a machine that started and was gone between two ticks (a per-job job shorter
than the time between ticks) is not counted; its launch was counted as committed while pending.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from scaler.jobs.keys import spend_at_key, spend_bucket_key
from scaler.policy.budget import WINDOW_S, Spend
from scaler.policy.types import MachineView
from scaler.telemetry.costs import price_per_second

__all__ = ["BUCKET_S", "SpendLedger", "machine_rate", "machine_rates"]

BUCKET_S = 60
BUCKET_TTL_S = int(2 * WINDOW_S)

_ACCRUE_LUA = """
local at = redis.call('GET', KEYS[1])
if (at or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], BUCKET_TTL)
return 1
""".replace("BUCKET_TTL", str(BUCKET_TTL_S))


def machine_rate(
    size: str, memory_mb: int, pool: str | None, overrides: Mapping[str, float],
    fallback: Mapping[str, float],
) -> float:
    """USD per second of a started machine: by its own size label and memory (list prices,
    ``overrides`` by label), else its pool's price from ``fallback``, else 0 (not counted). The
    one pricing rule of the budgets' ledger and of the cost metrics."""
    rate = price_per_second(size, memory_mb, overrides) if size else 0.0
    return rate if rate > 0 else fallback.get(pool or "", 0.0)


def machine_rates(
    machines: Iterable[MachineView], overrides: Mapping[str, float], fallback: Mapping[str, float]
) -> list[tuple[MachineView, float]]:
    """Started machines with their USD per second (:func:`machine_rate`); those without a price
    are left out."""
    out = []
    for m in machines:
        if m.state != "started":
            continue
        rate = machine_rate(m.size, m.memory_mb, m.pool, overrides, fallback)
        if rate > 0:
            out.append((m, rate))
    return out


class SpendLedger:
    """Per-minute spend buckets in Redis (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._accrue = redis.register_script(_ACCRUE_LUA)

    async def accrue(
        self, now: float, started: Iterable[tuple[MachineView, float]], app_of: Mapping[str, str]
    ) -> float:
        """Add each started machine's cost since the last accrual (an hour at most); returns the
        USD added (0.0 when another replica accrued first, or this is the first accrual)."""
        at_key = spend_at_key(self.prefix)
        raw = await self.redis.get(at_key)
        last_text = raw.decode() if isinstance(raw, bytes) else (raw or "")
        stamp = repr(float(now))
        if not last_text:
            await self.redis.set(at_key, stamp, nx=True)
            return 0.0
        last = max(float(last_text), now - WINDOW_S)
        if now <= last:
            return 0.0
        fields: dict[str, float] = {}
        for m, rate in started:
            since = max(last, m.started_at if m.started_at is not None else last)
            usd = rate * max(0.0, now - since)
            if usd <= 0:
                continue
            for name in ("total", f"app:{m.app or app_of.get(m.pool or '', '')}",
                         f"pool:{m.pool or '(unknown)'}"):
                fields[name] = fields.get(name, 0.0) + usd
        args: list[str] = [last_text, stamp]
        for name, usd in fields.items():
            args += [name, repr(usd)]
        bucket = spend_bucket_key(self.prefix, math.floor(now / BUCKET_S))
        done = await self._accrue(keys=[at_key, bucket], args=args)
        return fields.get("total", 0.0) if int(done) else 0.0

    async def read(self, now: float, price_per_s: Mapping[str, float]) -> Spend:
        """The spend of the rolling hour ending at ``now`` (its 60 one-minute buckets)."""
        current = math.floor(now / BUCKET_S)
        n = int(WINDOW_S // BUCKET_S)
        pipe = self.redis.pipeline(transaction=False)
        for minute in range(current - n + 1, current + 1):
            pipe.hgetall(spend_bucket_key(self.prefix, minute))
        total = 0.0
        by_app: dict[str, float] = {}
        by_pool: dict[str, float] = {}
        for bucket in await pipe.execute():
            for k, v in (bucket or {}).items():
                name = k.decode() if isinstance(k, bytes) else str(k)
                usd = float(v)
                if name == "total":
                    total += usd
                elif name.startswith("app:"):
                    by_app[name[4:]] = by_app.get(name[4:], 0.0) + usd
                elif name.startswith("pool:"):
                    by_pool[name[5:]] = by_pool.get(name[5:], 0.0) + usd
        return Spend(total, by_app, by_pool, dict(price_per_s))
