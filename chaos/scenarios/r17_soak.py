"""R17 soak: a steady stream of jobs for a long time while about 1 % of everything fails: Fly calls
answered 5xx or 429, creates whose answer is lost, machines crashing at boot.

Must hold, sampled every second: resident memory, open files and asyncio tasks of the scaler stay
flat (the median of the last third of the run is within 10 % / 8 MB, 5 files and 3 tasks of the
first third's, warm-up excluded); and at the end, after a drain: the scaler's accounting balances
(machines it counts as created, minus those the local API has destroyed, equals what its metrics
still count live, which is 0), nothing is left live, every job ran exactly once.

Quick: 12 s. Full: ``CHAOS_SOAK_SECONDS`` (default 600 s, 10 minutes). 0.8 jobs/s, under Fly's
create limit of 1/s per app. The scaler runs under :mod:`chaos.probe`, which samples its event
loop's task count.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

from chaos.harness import ChaosContext
from chaos.jobs import Job
from chaos.measure import all_ran, conclude, machines_per_launch, wait_for
from chaos.procstat import open_fds, rss_bytes
from chaos.result import ScenarioResult

ID = "R17"
TITLE = "soak with 1% faults"
MAX_LAUNCHES = 5

CAP = 4
ONE_PERCENT = 0.01
FAULTS = {
    "*": {"error_rate": ONE_PERCENT, "rate_limit_rate": ONE_PERCENT},
    "Machines_create": {"error_rate": ONE_PERCENT, "rate_limit_rate": ONE_PERCENT,
                        "ambiguous_rate": ONE_PERCENT, "ambiguous_mode": "drop"},
    "machines": {"crash_rate": ONE_PERCENT, "crash_after": 0.1, "crash_exit_code": 137},
}


def _third_medians(values: list[float]) -> tuple[float, float]:
    third = max(1, len(values) // 3)
    return statistics.median(values[:third]), statistics.median(values[-third:])


def run(ctx: ChaosContext) -> ScenarioResult:
    """The scenario."""
    result = ScenarioResult(ID, TITLE)
    seconds = ctx.seconds(12.0, float(os.environ.get("CHAOS_SOAK_SECONDS", "600")))
    rate = 0.8  # under Fly's create limit (1/s per app): a steady state, not a backlog
    warmup = 3.0
    api = ctx.local_api()
    app = api.create_app()
    api.set_faults(FAULTS, seed=17)
    config = ctx.config(api, [ctx.pool(app, max_machines=CAP, max_launches=MAX_LAUNCHES)])
    scaler = ctx.start_scaler(config, api, start=False)
    probe = ctx.workdir / "tasks.jsonl"
    scaler.proc.argv[scaler.proc.argv.index("scaler.cli")] = "chaos.probe"
    scaler.proc.env["CHAOS_PROBE_FILE"] = str(probe)
    scaler.start()

    jobs: list[Job] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            jobs.extend(ctx.jobs(1, first=i))
            i += 1
            stop.wait(1.0 / rate)

    producer = threading.Thread(target=produce, name="r17-producer", daemon=True)
    ctx.on_cleanup(stop.set)
    started = time.monotonic()
    producer.start()
    rss: list[float] = []
    fds: list[float] = []
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        if time.monotonic() - started >= warmup:
            rss.append(rss_bytes(scaler.pid) / 2**20)
            fds.append(open_fds(scaler.pid))
    stop.set()
    producer.join(10)
    tasks = [float(r["tasks"]) for r in _samples(probe) if r["t"] - started >= warmup]

    api.set_faults({})
    t = time.monotonic()
    wait_for(lambda: all_ran(ctx, jobs), 30, interval=0.2)
    result.details["all_ran_after_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    # Machines crash at boot here on purpose: their jobs are relaunched (a new launch, a new
    # machine), so invariant 1 is one machine per launch, as in R3 and R8.
    machines = conclude(result, ctx, api, app, jobs, cap=CAP, max_per_job=MAX_LAUNCHES)
    result.details["drained_after_s"] = round(time.monotonic() - t, 1)
    duplicates = {f"{job}#{launch}": n for (job, launch), n in machines_per_launch(machines).items()
                  if n > 1}
    result.details["relaunched_jobs"] = sum(
        1 for (_, launch) in machines_per_launch(machines) if launch not in ("1", "None"))
    result.check(not duplicates, "invariant 1 (one machine per launch): two machines for one "
                                 f"launch of a job: {duplicates}")
    # The scaler's gauges are refreshed by its ticks: give it a few to see the end state.
    wait_for(lambda: scaler.metric("fly_scaler_live_machines") == 0, 5, interval=0.2)
    created = scaler.metric("fly_scaler_launches_total", result="created")
    counted_live = scaler.metric("fly_scaler_live_machines")
    destroyed = sum(1 for m in machines if m.get("state") == "destroyed")
    result.details.update({
        "seconds": seconds, "jobs_per_s": rate, "machines_in_api": len(machines),
        "scaler_created": created, "api_destroyed": destroyed,
        "scaler_live_at_end": counted_live,
    })
    result.check(created - destroyed == counted_live,
                 f"accounting: the scaler counts {created:.0f} machines created, the local API "
                 f"destroyed {destroyed}, but the scaler still counts {counted_live:.0f} live "
                 f"(the API made {len(machines)} machines)")
    for name, values, slack in (("RSS (MB)", rss, None), ("open files", fds, 5.0),
                                ("asyncio tasks", tasks, 3.0)):
        if len(values) < 3:
            result.check(False, f"flat {name}: only {len(values)} samples")
            continue
        first, last = _third_medians(values)
        allowed = first + (slack if slack is not None else max(8.0, 0.1 * first))
        result.details[f"{name} first/last third"] = [round(first, 1), round(last, 1)]
        result.check(last <= allowed, f"flat {name}: median {first:.1f} in the first third of "
                                      f"the run, {last:.1f} in the last (allowed {allowed:.1f})")
    return result


def _samples(path: Path) -> list[dict[str, float]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
