"""R18 config change under load: while jobs run, the scaler is redeployed with a new config that
changes five pools at once, each on its own Fly app:

- ``rename``: the pool is renamed (same queue, same app);
- ``remove``: the pool is removed (nobody serves its queue any more);
- ``move``: the pool is removed and its queue moved to another pool of the same app;
- ``mode``: the pool becomes a worker pool (same name and queue);
- ``cap``: the pool's cap is lowered below what is running (3 -> 1).

Must hold (invariants 2 and 3): no claimed job lost or stranded, and a running job's machine is
never destroyed without giving its job back. Every job ends, within the jobs' run time plus a few
orphan graces, as one of: done (its side effect happened once), given back to its queue (waiting
there: only a queue nobody serves may keep it), or dead-lettered with a reason. A job that ran
twice breaks invariant 1. A failure names the case, the job's state (its claim, if stranded) and
the scaler's destroys of machines whose job was still running.

Jobs run 8 s (quick) or 20 s (full); the orphan grace is 3 s.
"""

from __future__ import annotations

import json
import time
from typing import Any

from chaos.apps import new_apps
from chaos.harness import ChaosContext
from chaos.jobs import Job, side_effects
from chaos.measure import live, machines_per_launch, metadata, ours, wait_for
from chaos.result import ScenarioResult
from scaler.jobs.claims import claims_key, dead_reasons_key
from scaler.local.testing import free_port
from scaler.loop.machines import META_JOB

ID = "R18"
TITLE = "config change under load"

CASES = ("rename", "remove", "move", "mode", "cap")
JOBS = {"rename": 2, "remove": 2, "move": 2, "mode": 2, "cap": 3}


def _worker(pool: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in pool.items() if k != "max_launches"}
    out.update(mode="worker", idle_timeout="2s")
    return out


def _configs(ctx: ChaosContext, apps: dict[str, str]) -> tuple[list[dict[str, Any]],
                                                                 list[dict[str, Any]]]:
    q = {c: f"{ctx.queue}{c}" for c in (*CASES, "dest")}

    def pool(case: str, name: str, cap: int, queues: list[str] | None = None) -> dict[str, Any]:
        p = ctx.pool(apps[case], name=name, queue=q[case], max_machines=cap)
        if queues is not None:
            p["queues"] = queues
        return p

    v1 = [pool("rename", "ren", 2), pool("remove", "rem", 2), pool("move", "mov", 2),
          {**pool("move", "dst", 2), "queues": [q["dest"]],
           "env": ctx.machine_env(queue=q["dest"])},
          pool("mode", "mod", 2), pool("cap", "cap", 3)]
    v2 = [pool("rename", "renamed", 2),
          {**pool("move", "dst", 4), "queues": [q["dest"], q["move"]],
           "env": ctx.machine_env(queue=q["move"])},
          _worker(pool("mode", "mod", 2)), pool("cap", "cap", 1)]
    return v1, v2


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    job_s = ctx.seconds(8.0, 20.0)
    api = ctx.local_api()
    apps = dict(zip(CASES, new_apps(api, len(CASES)), strict=True))
    setup_429s = api.rate_limited()
    v1, v2 = _configs(ctx, apps)
    jobs: dict[str, list[Job]] = {}
    first = 0
    for case in CASES:
        jobs[case] = ctx.jobs(JOBS[case], "work", job_s, queue=f"{ctx.queue}{case}",
                              first=first)
        first += JOBS[case]
    everyone = [j for js in jobs.values() for j in js]
    config = ctx.config(api, v1)
    old = ctx.start_scaler(config, api, name="v1")

    def started() -> bool:
        began = set(ctx.redis.lrange(f"{ctx.key}:start", 0, -1))
        return all(j.name in began for j in everyone)

    result.check(wait_for(started, 20, interval=0.1),
                 "set-up: not every job was running before the config change")
    old.terminate()
    changed = time.monotonic()
    new = ctx.start_scaler({**config, "pools": v2, "http": {
        **config["http"], "port": free_port()}}, api, name="v2")

    def outcome(case: str, j: Job) -> str:
        runs = side_effects(ctx.redis, ctx.key)[j.name]
        if runs:
            return "done" if runs == 1 else f"ran {runs} times"
        q = f"{ctx.queue}{case}"
        if ctx.redis.hexists(dead_reasons_key(ctx.prefix, q), j.redis_message_id):
            return "dead-lettered"
        if j.redis_message_id in set(ctx.redis.lrange(f"{ctx.namespace}:{q}", 0, -1)):
            return "queued"
        raw = ctx.redis.hget(claims_key(ctx.prefix, q), j.redis_message_id)
        if raw:
            c = json.loads(raw)
            return f"claimed by {c.get('pool')} (launch {c.get('launch')}, {c.get('state')})"
        return "nowhere"

    def settled() -> bool:
        return all(outcome(c, j) in ("done", "dead-lettered")
                   or (outcome(c, j) == "queued" and c == "remove")
                   for c in CASES for j in jobs[c])

    wait_for(settled, job_s + ctx.seconds(12.0, 30.0), interval=0.25)
    outcomes = {c: {j.name: outcome(c, j) for j in jobs[c]} for c in CASES}
    result.details["after_change_s"] = round(time.monotonic() - changed, 1)
    result.details["outcomes"] = outcomes
    destroyed_running = _destroyed_while_running(ctx, new.events("machine destroyed"),
                                                 everyone)
    for case in CASES:
        bad = {n: o for n, o in outcomes[case].items()
               if o not in ("done", "dead-lettered") and not (o == "queued" and case == "remove")}
        twice = {n: o for n, o in bad.items() if o.startswith("ran ")}
        lost = {n: o for n, o in bad.items() if n not in twice}
        cause = "; ".join(d for d in destroyed_running if d.startswith(f"{case}:"))
        result.check(not lost, f"invariant 2 ({case}): jobs neither done, given back nor "
                               f"dead-lettered: {lost}" + (f"; {cause}" if cause else ""))
        result.check(not twice, f"invariant 1 ({case}): {twice}")
    result.details["destroyed_while_job_ran"] = destroyed_running
    runs = side_effects(ctx.redis, ctx.key)
    result.jobs = len(everyone)
    result.ran_exactly_once = all(runs[j.name] == 1 for j in everyone)
    wait_for(lambda: not any(live(ours(api.machines(a))) for a in apps.values()), 15)
    machines = [m for a in apps.values() for m in ours(api.machines(a))]
    per_job: dict[str, int] = {}
    for m in machines:
        job = metadata(m).get(META_JOB)
        if job:
            per_job[str(job)] = per_job.get(str(job), 0) + 1
    result.max_machines_per_job = max(per_job.values(), default=0)
    dup = {k: n for k, n in machines_per_launch(machines).items() if n > 1}
    result.check(not dup, f"invariant 1 (one machine per launch): {dup}")
    leaked = live(machines)
    result.leaked = len(leaked)
    result.check(not leaked, "invariant 3 (no leaked machine): still live: "
                             + ", ".join(f"{m.get('name')} ({m.get('state')})" for m in leaked))
    result.peak_live = api.peak_live(apps["cap"])
    result.cap = 3
    result.rate_limited = api.rate_limited() - setup_429s
    return result


def _destroyed_while_running(
    ctx: ChaosContext, events: list[dict[str, Any]], jobs: list[Job]
) -> list[str]:
    """The new scaler's destroys of machines whose job had started and not finished (by the
    job's own side effects at the end: a job that never finished was running when destroyed)."""
    by_id = {j.redis_message_id: j for j in jobs}
    runs = side_effects(ctx.redis, ctx.key)
    out = []
    for e in events:
        name = str(e.get("name") or "")
        pool = str(e.get("pool") or "")
        job = next((j for rmid, j in by_id.items() if rmid.replace("-", "") in name), None)
        if job is None or runs[job.name]:
            continue
        case = {"ren": "rename", "renamed": "rename", "rem": "remove", "mov": "move",
                "dst": "move", "mod": "mode", "cap": "cap"}.get(name.split("-")[0], pool)
        out.append(f"{case}: machine {name} of {job.name} destroyed ({e.get('reason')}) while "
                   "its job ran")
    return out
