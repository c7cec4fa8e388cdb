"""The assembled service: readiness tells a follower from a replica that cannot reach Redis."""

from __future__ import annotations

from typing import Any

from scaler.loop.service import Service
from tests.scaler_harness import make_settings


def _settings(redis_url: str, prefix: str) -> Any:
    return make_settings(api_url="http://127.0.0.1:1", token="t", redis_url=redis_url,
                         namespace=prefix, prefix=f"{prefix}fs", app="app", queue="q")


async def test_readiness_follows_redis_and_leadership(redis_url: str, redis_prefix: str) -> None:
    down = Service(_settings("redis://127.0.0.1:1/0", redis_prefix), http=False, promoter=False)
    await down.elector.step()
    ready, why = down._readiness()
    assert not ready and "redis unreachable" in why
    await down.close()

    leader = Service(_settings(redis_url, redis_prefix), http=False, promoter=False, owner="a")
    follower = Service(_settings(redis_url, redis_prefix), http=False, promoter=False, owner="b")
    assert await leader.elector.step()
    assert not await follower.elector.step()
    assert follower._readiness() == (True, "follower: standing by")
    assert leader._readiness() == (False, "no tick yet")  # the leader is ready once it ticked
    await leader.reconciler.tick()
    assert leader._readiness() == (True, "ok")
    await follower.close()
    await leader.close()
