"""The simulation's chart: queue depth, live machines and queue waits over virtual time, one
colour per pool, one column per compared config. Drawn with matplotlib's Agg backend (no display),
imported only when a chart is asked for."""

from __future__ import annotations

from pathlib import Path

from scaler.replay.report import Report

__all__ = ["write_chart"]


def write_chart(path: str | Path, reports: list[tuple[str, Report]]) -> None:
    """Write a PNG of every report side by side (three rows: depth, machines, wait)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(reports)
    fig, axes = plt.subplots(3, cols, figsize=(6.0 * cols, 7.5), sharex="col", squeeze=False)
    for col, (label, report) in enumerate(reports):
        depth_ax, machines_ax, wait_ax = (axes[row][col] for row in range(3))
        minutes = [t / 60.0 for t in report.samples_t]
        for pool in report.pools:
            depth_ax.step(minutes, report.samples_depth.get(pool.pool, []), where="post",
                          label=pool.pool)
            machines_ax.step(minutes, report.samples_machines.get(pool.pool, []), where="post",
                             label=pool.pool)
            if pool.wait_points:
                wait_ax.plot([(t - report.origin) / 60.0 for t, _ in pool.wait_points],
                             [w for _, w in pool.wait_points], ".", markersize=3,
                             label=pool.pool)
        depth_ax.set_title(f"{label}: queue depth (ready messages)")
        machines_ax.set_title("live machines")
        wait_ax.set_title("queue wait of each job (s), by start time")
        wait_ax.set_xlabel("virtual minutes")
        for ax in (depth_ax, machines_ax, wait_ax):
            ax.grid(alpha=0.3)
        depth_ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

