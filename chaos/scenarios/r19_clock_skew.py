"""R19 clock skew: Fly's clock 5 minutes ahead of the scaler's, and 5 minutes behind (the local
API's ``clock.offset``: every timestamp it reports, and its ``Date`` header, are shifted).

Three identical runs side by side (no skew, +300 s, -300 s), each with its own local API, scaler and
Redis keys: a normal job (1 s of work, on a machine that waits 1.5 s to be placed, so that the
scaler sees it booting) and a job that hangs, which ``max_runtime`` (4 s) must cut; with
``max_launches = 1`` it is then dead-lettered. Must hold (invariants 3 and 2): no machine reaped
early or kept past its limits because of the skew: the reaps by reason of each skewed run equal
those of the run without skew, the hung job is cut within 3 s of when it is cut without skew, and
the normal job runs once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from chaos.harness import ChaosContext
from chaos.jobs import Job, enqueue, side_effects
from chaos.localapi import LocalAPI
from chaos.measure import live, ours, wait_for
from chaos.result import ScenarioResult
from chaos.scalerproc import ScalerProc

ID = "R19"
TITLE = "clock skew (Fly +-5 min)"

SKEWS = {"none": 0.0, "fly ahead": 300.0, "fly behind": -300.0}
MAX_RUNTIME_S = 4.0
LATE_S = 3.0


@dataclass
class _Run:
    label: str
    api: LocalAPI
    app: str
    namespace: str
    key: str
    queue: str
    scaler: ScalerProc | None = None
    jobs: list[Job] = field(default_factory=list)
    started: float = 0.0
    hang_cut_s: float | None = None
    reaps: dict[str, int] = field(default_factory=dict)

    def hang_cut(self, ctx: ChaosContext) -> bool:
        dead = ctx.redis.zscore(f"{self.namespace}:{self.queue}.XQ", self.jobs[1].redis_message_id)
        if dead is not None and self.hang_cut_s is None:
            self.hang_cut_s = time.monotonic() - self.started
        return dead is not None

    def normal_done(self, ctx: ChaosContext) -> bool:
        return bool(side_effects(ctx.redis, self.key)[self.jobs[0].name])


def _start(ctx: ChaosContext, label: str, offset: float) -> _Run:
    api = ctx.local_api(faults={"machines": {"boot_delay": 1.5}, "clock": {"offset": offset}})
    app = api.create_app()
    slug = label.replace(" ", "-")
    run = _Run(label, api, app, f"{ctx.namespace}:{slug}", f"{ctx.key}:{slug}", ctx.queue)
    pool = ctx.pool(app, max_machines=2, max_runtime=f"{MAX_RUNTIME_S:g}s", boot_timeout="20s",
                    max_launches=1)
    config = ctx.config(api, [pool])
    config["redis"] = {**config["redis"], "namespace": run.namespace,
                       "prefix": f"{run.namespace}:fs"}
    run.jobs = enqueue(ctx.redis_url, run.namespace, f"{run.namespace}:fs", run.queue, "work",
                       [(run.key, "normal", 1.0)])
    run.jobs += enqueue(ctx.redis_url, run.namespace, f"{run.namespace}:fs", run.queue, "hang",
                        [(run.key, "hung")])
    run.scaler = ctx.start_scaler(config, api, name=slug)
    run.started = time.monotonic()
    return run


def _reaps(scaler: ScalerProc) -> dict[str, int]:
    out: dict[str, int] = {}
    for (name, labels), value in scaler.metrics().items():
        if name == "fly_scaler_reaps_total" and value:
            reason = dict(labels).get("reason", "?")
            out[reason] = out.get(reason, 0) + int(value)
    return out


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    runs = {label: _start(ctx, label, offset) for label, offset in SKEWS.items()}
    deadline = ctx.seconds(14.0, 40.0)
    wait_for(lambda: all(r.hang_cut(ctx) and r.normal_done(ctx) for r in runs.values()),
             deadline, interval=0.2)
    for r in runs.values():
        r.hang_cut(ctx)
        wait_for(lambda r=r: not live(ours(r.api.machines(r.app))), 10)  # type: ignore[misc]
        assert r.scaler is not None
        r.reaps = _reaps(r.scaler)
    base = runs["none"]
    details: dict[str, Any] = {}
    for r in runs.values():
        details[r.label] = {"reaps": r.reaps, "hung_job_cut_after_s":
                            None if r.hang_cut_s is None else round(r.hang_cut_s, 1),
                            "normal_job_runs": side_effects(ctx.redis, r.key)["normal"]}
    result.details.update(details)
    result.check(base.hang_cut_s is not None and base.normal_done(ctx),
                 "set-up: without skew, the hung job was not cut or the normal job did not run")
    for r in runs.values():
        if r is base:
            continue
        result.check(r.reaps == base.reaps,
                     f"invariant 3 ({r.label}): reaps {r.reaps or 'none'}, without skew "
                     f"{base.reaps or 'none'}: limits measured with the scaler's clock against "
                     "Fly's timestamps")
        cut, allowed = r.hang_cut_s, (base.hang_cut_s or MAX_RUNTIME_S) + LATE_S
        result.check(cut is not None and cut <= allowed,
                     f"invariant 3 ({r.label}): the hung job was "
                     + ("never cut" if cut is None else f"cut after {cut:.1f} s")
                     + f" (without skew {base.hang_cut_s or 0:.1f} s; allowed {allowed:.1f} s)")
        runs_normal = side_effects(ctx.redis, r.key)["normal"]
        result.check(runs_normal == 1,
                     f"invariant 2 ({r.label}): the normal job ran {runs_normal} times")
    result.jobs = 2 * len(runs)
    result.ran_exactly_once = None  # the hung job is meant never to finish
    machines = [m for r in runs.values() for m in ours(r.api.machines(r.app))]
    per_job: dict[str, int] = {}
    for m in machines:
        job = str(((m.get("config") or {}).get("metadata") or {}).get("fly_scaler_job"))
        per_job[job] = per_job.get(job, 0) + 1
    result.max_machines_per_job = max(per_job.values(), default=0)
    leaked = live(machines)
    result.leaked = len(leaked)
    result.check(not leaked, "invariant 3 (no leaked machine): still live: "
                             + ", ".join(f"{m.get('name')} ({m.get('state')})" for m in leaked))
    result.peak_live = max(r.api.peak_live(r.app) for r in runs.values())
    result.cap = 2
    result.rate_limited = sum(r.api.rate_limited() for r in runs.values())
    return result
