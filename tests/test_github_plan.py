"""The planner's rules for GitHub runner pools (pure: observations in, plans out): idle runners
weighed against the jobs GitHub still has queued, surplus withdrawn in a safe order, a runner that
just came online spared, busy runners untouched, idle ones timed out, unknown counts acting on
nothing."""

from __future__ import annotations

from scaler.policy import (
    Caps,
    ClaimView,
    Destroy,
    MachineView,
    Observation,
    PoolPolicy,
    QueueView,
    RequeueOrDeadLetter,
    RunnerView,
    Withdraw,
    plan,
)
from scaler.policy.runners import SURPLUS_MIN_IDLE_S

NOW = 50_000.0
POOL = PoolPolicy("gh", "per-job", "ci", ("gh-jobs",), max_machines=10, boot_timeout_s=120,
                  max_runtime_s=3600, orphan_grace_s=60, claim_grace_s=10,
                  runner_idle_timeout_s=300)


def runner(job: str, *, started_ago: float | None = 100.0, state: str = "started") -> tuple[
        ClaimView, MachineView]:
    name = f"gh-{job}-1"
    c = ClaimView(queue="gh-jobs", job=job, message_id=f"github-job-{job}", pool="gh", launch=1,
                  claimed_at=NOW - 200, machine_name=name, machine_id=f"m-{job}")
    m = MachineView(id=f"m-{job}", name=name, app="ci", pool="gh", state=state,
                    created_at=NOW - (200 if started_ago else 20),
                    updated_at=NOW - (150 if started_ago else 20),
                    started_at=None if started_ago is None else NOW - started_ago,
                    job=job, queue="gh-jobs", launch=1)
    return c, m


def observe(pairs: list[tuple[ClaimView, MachineView]], *, queued: int | None, waiting: int = 0,
            busy: tuple[str, ...] = ()) -> Observation:
    return Observation(
        now=NOW,
        queues={"gh-jobs": QueueView("gh-jobs", waiting)},
        machines_by_app={"ci": tuple(m for _, m in pairs)},
        claims={"gh-jobs": tuple(c for c, _ in pairs)},
        create_budget={"ci": 10.0},
        runners={f"gh-{j}-1": RunnerView(f"gh-{j}-1", busy=True) for j in busy},
        github_queued={"gh": queued},
    )


def act(obs: Observation) -> tuple[list[str], list[str], list[str]]:
    p = plan(obs, [POOL], Caps(global_max=100))
    withdrawn = [a.claim.job for a in p.of_type(Withdraw)]
    requeued = [a.claim.job for a in p.of_type(RequeueOrDeadLetter)]
    destroyed = [a.machine.id for a in p.of_type(Destroy)]
    return withdrawn, requeued, destroyed


def test_as_many_idle_runners_as_queued_jobs_are_kept() -> None:
    pairs = [runner("a"), runner("b")]
    assert act(observe(pairs, queued=2)) == ([], [], [])


def test_a_surplus_runner_not_yet_started_goes_before_a_started_one() -> None:
    # One job was cancelled: two runners for one queued job. The booting one cannot have been
    # given a job yet: it is the one withdrawn.
    pairs = [runner("a", started_ago=200.0), runner("b", started_ago=None, state="created")]
    withdrawn, requeued, destroyed = act(observe(pairs, queued=1))
    assert withdrawn == ["b"] and destroyed == ["m-b"] and requeued == []


def test_among_started_runners_the_longest_online_goes_first() -> None:
    pairs = [runner("new", started_ago=60.0), runner("old", started_ago=250.0)]
    withdrawn, _, destroyed = act(observe(pairs, queued=1))
    assert withdrawn == ["old"] and destroyed == ["m-old"]


def test_a_runner_that_just_came_online_is_spared_and_the_plan_wakes_when_it_may_go() -> None:
    pairs = [runner("a", started_ago=5.0)]
    obs = observe(pairs, queued=0)
    p = plan(obs, [POOL], Caps(global_max=100))
    assert p.of_type(Withdraw) == () and p.of_type(Destroy) == ()
    assert any(d.reason == "runner_just_online" for d in p.decisions)
    assert p.wake_at is not None and p.wake_at <= NOW - 5.0 + SURPLUS_MIN_IDLE_S


def test_a_busy_runner_is_never_withdrawn_even_with_no_job_queued() -> None:
    pairs = [runner("a", started_ago=250.0)]
    assert act(observe(pairs, queued=0, busy=("a",))) == ([], [], [])


def test_waiting_messages_count_as_demand_already_served() -> None:
    # One job queued on GitHub, already a waiting message for it: the idle runner is surplus.
    pairs = [runner("a", started_ago=100.0)]
    withdrawn, _, _ = act(observe(pairs, queued=1, waiting=1))
    assert withdrawn == ["a"]


def test_a_runner_given_no_job_within_the_timeout_is_destroyed_and_its_job_given_back() -> None:
    pairs = [runner("a", started_ago=301.0), runner("b", started_ago=100.0)]
    withdrawn, requeued, destroyed = act(observe(pairs, queued=2))
    assert withdrawn == [] and requeued == ["a"] and destroyed == ["m-a"]
    p = plan(observe(pairs, queued=2), [POOL], Caps(global_max=100))
    (req,) = p.of_type(RequeueOrDeadLetter)
    assert req.reason == "idle_timeout" and req.requires_destroy == "m-a"
    assert p.wake_at is not None and p.wake_at <= NOW - 100.0 + 300.0


def test_unknown_github_counts_withdraw_nothing() -> None:
    pairs = [runner("a", started_ago=250.0)]
    p = plan(observe(pairs, queued=None), [POOL], Caps(global_max=100))
    assert p.of_type(Withdraw) == ()
    assert any(d.reason == "unknown_data" for d in p.decisions)


def test_a_per_job_pool_without_runners_is_untouched_by_these_rules() -> None:
    plain = PoolPolicy("gh", "per-job", "ci", ("gh-jobs",), max_machines=10)
    pairs = [runner("a", started_ago=10_000.0)]
    p = plan(observe(pairs, queued=0), [plain], Caps(global_max=100))
    assert p.of_type(Withdraw) == ()


def test_launches_are_capped_by_the_jobs_github_still_has_queued_beyond_idle_runners() -> None:
    from scaler.policy import Launch

    # Three messages wait, GitHub has two jobs queued and one idle runner is there: one launch.
    obs = observe([runner("a", started_ago=10.0)], queued=2, waiting=3)
    p = plan(obs, [POOL], Caps(global_max=100))
    assert sum(a.count for a in p.of_type(Launch)) == 1
    assert any(d.reason == "runner_surplus" and d.count == 2 for d in p.decisions)
    # Unknown GitHub counts hold nothing back.
    p = plan(observe([], queued=None, waiting=3), [POOL], Caps(global_max=100))
    assert sum(a.count for a in p.of_type(Launch)) == 3
