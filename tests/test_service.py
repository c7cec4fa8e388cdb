"""The assembled service: readiness tells a follower from a replica that cannot reach Redis."""

from __future__ import annotations

import json
from typing import Any

import redis
from structlog.testing import capture_logs

from scaler.commands.status import format_status
from scaler.jobs.keys import status_key
from scaler.local.server import LocalAPIServer
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


async def test_a_refused_token_or_a_missing_app_is_named_once_and_not_ready(
    local_api: LocalAPIServer, redis_url: str, redis_prefix: str
) -> None:
    """A wrong token (401) or a pool's app that does not exist (404) names its cause in /readyz,
    in the status `scaler status` prints, and in one warning, not one per tick."""
    for token, app, expected in (
        ("wrong-token", "any-app", "the Fly token was refused (HTTP 401)"),
        (local_api.token, f"missing-{redis_prefix}", "does not exist (HTTP 404)"),
    ):
        settings = make_settings(api_url=local_api.url, token=token, redis_url=redis_url,
                                 namespace=redis_prefix, prefix=f"{redis_prefix}{app}",
                                 app=app, queue="q")
        service = Service(settings, http=False, promoter=False, owner="a")
        assert await service.elector.step()
        with capture_logs() as logs:
            for _ in range(3):
                await service.reconciler.tick()
        ready, why = service._readiness()
        assert not ready and expected in why, why
        warnings = [e for e in logs if e["event"] == "data unavailable"]
        assert len(warnings) == 1 and expected in warnings[0]["problem"], warnings
        assert "wrong-token" not in str(logs)
        client = redis.Redis.from_url(redis_url)
        status = json.loads(client.get(status_key(settings.redis.prefix)) or b"{}")
        client.close()
        text = format_status(status)
        assert f"{app}: UNKNOWN (" in text and expected in text
        await service.close()
