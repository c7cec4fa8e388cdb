"""Local Machines API benchmark: the sim runtime holding 10,000 machines across 10 apps.

Measures, over real HTTP, the median latency of listing an app's machines with ``summary=true``
and with a metadata filter, plus the server process's resident memory. ``main()`` prints a small
table and returns the numbers as a dict (for the bench harness). Not a test.
"""

from __future__ import annotations

import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from scaler.local import LocalAPIServer

APPS = 10
MACHINES = 10_000
SAMPLES = 30


def _rss_mb() -> float:
    """Current resident set size of this process (the server runs in it), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_ms(client: httpx.Client, path: str, params: dict[str, str]) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(SAMPLES):
        start = time.perf_counter()
        r = client.get(path, params=params)
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        count = len(r.json())
    return statistics.median(times), count


def _populate(server: LocalAPIServer, apps: list[str]) -> None:
    per_app = MACHINES // len(apps)

    def fill(app: str) -> None:
        with server.client(timeout=60) as c:
            c.post("/v1/apps", json={"name": app, "org_slug": "personal"}).raise_for_status()
            for i in range(per_app):
                c.post(f"/v1/apps/{app}/machines", json={
                    "config": {"image": "registry.fly.io/worker:latest",
                               "env": {"QUEUE": "default"},
                               "metadata": {"pool": f"pool-{i % 4}", "job": f"job-{i}",
                                            "fly_scaler": "1"}},
                }).raise_for_status()

    with ThreadPoolExecutor(max_workers=len(apps)) as pool:
        list(pool.map(fill, apps))


def main() -> dict[str, Any]:
    """Run the benchmark; print a table; return the numbers."""
    rss_before = _rss_mb()
    server = LocalAPIServer(runtime="sim", timings="fast", rate_limits="off")
    try:
        apps = [f"bench-app-{n}" for n in range(APPS)]
        start = time.perf_counter()
        _populate(server, apps)
        populate_s = time.perf_counter() - start
        with server.client(timeout=60) as c:
            path = f"/v1/apps/{apps[0]}/machines"
            summary_ms, summary_n = _median_ms(c, path, {"summary": "true"})
            filter_ms, filter_n = _median_ms(c, path, {"metadata.pool": "pool-1",
                                                        "summary": "true"})
            full_filter_ms, _ = _median_ms(c, path, {"metadata.job": "job-7"})
            get_ms, _ = _median_ms(c, f"{path}/{server.state.machines(apps[0])[0].id}", {})
        rss = _rss_mb()
        result = {
            "machines": len(server.state.machines_by_id),
            "apps": APPS,
            "populate_seconds": round(populate_s, 2),
            "list_summary_ms_median": round(summary_ms, 2),
            "list_summary_rows": summary_n,
            "list_metadata_filter_ms_median": round(filter_ms, 2),
            "list_metadata_filter_rows": filter_n,
            "list_metadata_filter_full_ms_median": round(full_filter_ms, 2),
            "get_machine_ms_median": round(get_ms, 2),
            "rss_mb": round(rss, 1),
            "rss_delta_mb": round(rss - rss_before, 1),
        }
    finally:
        server.close()
    print(f"{'local Machines API (sim)':<40} {'value':>10}")
    for key, value in result.items():
        print(f"{key:<40} {value:>10}")
    return result


if __name__ == "__main__":
    main()
