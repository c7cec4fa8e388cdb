"""``python -m chaos.probe run -c CONFIG ...``: the scaler's own command line (``scaler.cli``), plus
a sampler thread that appends the number of asyncio tasks of its event loop to the file named by
``CHAOS_PROBE_FILE`` every half second (JSON lines ``{"t": monotonic, "tasks": n}``). The scaler
exports no task count; a steadily growing one is a leak that ``/proc`` cannot show."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

__all__ = ["main"]

_loops: list[asyncio.AbstractEventLoop] = []


class _Policy(asyncio.DefaultEventLoopPolicy):
    """The default policy, remembering every loop it makes (``asyncio.run`` asks it for one)."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        _loops.append(loop)
        return loop


def _count(loop: asyncio.AbstractEventLoop) -> int | None:
    for _ in range(5):  # the set may change under us (another thread's loop): try again
        try:
            return len(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return None


def _sample(path: str, interval: float) -> None:
    while True:
        time.sleep(interval)
        for loop in list(_loops):
            if loop.is_closed():
                continue
            n = _count(loop)
            if n is not None:
                with open(path, "a") as out:
                    out.write(json.dumps({"t": time.monotonic(), "tasks": n}) + "\n")


def main() -> int:
    """Run ``scaler`` with the sampler."""
    asyncio.set_event_loop_policy(_Policy())
    path = os.environ.get("CHAOS_PROBE_FILE")
    if path:
        threading.Thread(target=_sample, args=(path, 0.5), name="chaos-probe",
                         daemon=True).start()
    from scaler.cli import main as scaler_main

    return scaler_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
