"""``scaler status --watch``: a frame per interval until Ctrl-C, carrying on through bad frames."""

from __future__ import annotations

import io

from scaler.commands.status import watch


def test_watch_redraws_until_interrupted_and_survives_a_bad_frame() -> None:
    frames = iter(["no status published: is a scaler running", "queues:\n  jobs: ready=3"])
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(lambda: next(frames), 1.5, sleep=sleep, out=out) == 0
    text = out.getvalue()
    assert waits == [1.5, 1.5]
    assert text.index("no status published") < text.index("jobs: ready=3")
    assert text.count("(Ctrl-C to stop)") == 2
    assert "\x1b[2J" not in text  # not a terminal: no screen clearing codes
