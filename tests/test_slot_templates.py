"""A pool's slot template: its fingerprint, the slot create request, and which jobs cannot run
on a slot (their own size or region); Fly limits starts per machine, not per app."""

from __future__ import annotations

from typing import Any

from scaler.fly.limits import classify
from scaler.jobs.claim_record import SLOT_ENV
from scaler.jobs.claims import Claim
from scaler.loop.claimview import check_options, claim_view
from scaler.loop.machines import META_SLOT, pool_policy, slot_request, slot_template
from scaler.loop.slots import needs_own_machine
from tests.scaler_harness import make_settings


def _settings(**pool: Any) -> Any:
    return make_settings(api_url="http://x", token="t", redis_url="redis://127.0.0.1:6379/0",
                         namespace="n", prefix="p", app="app", queue="q",
                         extra_pool={"warm_slots": 2, "region": "ord", **pool})


def _claim(options: dict[str, Any] | None) -> Any:
    message = {"options": {} if options is None else {"fly_machine": options}}
    c = Claim("r1", "jobs", "q", "m1", 1, 0, "jobs-r1-1", message=message)
    return claim_view(c, check_options(c))


def test_the_fingerprint_follows_the_template() -> None:
    base = _settings()
    same = slot_template(base.pools[0], base)
    assert slot_template(_settings().pools[0], _settings()) == same
    for change in ({"image": "local/sample:v2"}, {"size": "performance-2x"},
                   {"env": {"X": "1"}}, {"region": "ams"}, {"cmd": ["python", "-V"]}):
        other = _settings(**change)
        assert slot_template(other.pools[0], other) != same, change
    assert pool_policy(base.pools[0], base).slot_template == same


def test_a_slot_is_the_template_stopped_and_kept() -> None:
    s = _settings()
    req = slot_request(s.pools[0], s)
    assert not req.skip_launch  # it boots once, finds no job, and waits stopped
    assert req.config.auto_destroy is False
    assert req.config.restart is not None and req.config.restart.policy == "no"
    assert req.config.metadata is not None
    assert req.config.metadata[META_SLOT] == slot_template(s.pools[0], s)
    assert req.config.env is not None
    assert "FLY_SCALER_MESSAGE" not in req.config.env  # the runner finds its job by machine id
    assert req.config.env[SLOT_ENV] == "1"  # and only a slot's runner looks it up that way
    assert req.config.image == s.pools[0].image


def test_jobs_with_their_own_size_or_region_need_their_own_machine() -> None:
    pool = _settings().pools[0]
    assert not needs_own_machine(pool, _claim(None))
    assert not needs_own_machine(pool, _claim({"region": "ord"}))  # the template's region
    assert needs_own_machine(pool, _claim({"region": "ams"}))
    assert needs_own_machine(pool, _claim({"size": "performance-2x"}))
    assert needs_own_machine(pool, _claim({"cpus": 99}))  # invalid: dead-lettered on that path


def test_starts_are_limited_per_machine_not_per_app() -> None:
    a = classify("POST", "/v1/apps/ci/machines/m1/start")
    b = classify("POST", "/v1/apps/ci/machines/m2/start")
    create = classify("POST", "/v1/apps/ci/machines")
    assert (a.action, a.scope) == ("Machines_start", "machine:m1")
    assert a.scope != b.scope  # 100 slots started at once draw on 100 buckets
    assert create.scope == "app:ci"
