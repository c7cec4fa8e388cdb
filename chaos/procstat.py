"""What ``/proc`` says about a process: CPU time, resident memory, threads, open files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "open_fds", "rss_bytes", "threads"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its own, not its children's)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no {key}")


def rss_bytes(pid: int) -> int:
    """Resident set size in bytes."""
    return _status(pid, "VmRSS") * 1024


def threads(pid: int) -> int:
    """Number of threads."""
    return _status(pid, "Threads")


def open_fds(pid: int) -> int:
    """Number of open file descriptors (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
