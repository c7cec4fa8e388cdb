"""Child processes of a scenario: each in its own session (process group), output to a log file,
and always cleaned up (SIGCONT for a frozen one, SIGTERM, then SIGKILL), on failure and Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.common import stop_group

__all__ = ["Proc", "kill_under"]


class Proc:
    """One child process (and its process group) with its log at ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def start(self) -> Proc:
        """Start it (again, after it exited: the log is appended to)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.frozen = False
        return self

    @property
    def pid(self) -> int:
        """The process id (it is also the process group id)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether it runs (a frozen process runs)."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (negative: killed by that signal)."""
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to its whole process group (nothing if it exited)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; waits until it is gone."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(10)
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: a GC pause, a stalled VM."""
        self.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self.signal(signal.SIGCONT)
        self.frozen = False

    def terminate(self) -> int | None:
        """SIGTERM (SIGKILL after 15 s) and wait; returns the exit code."""
        if self.alive:
            if self.frozen:
                self.thaw()
            assert self.popen is not None
            stop_group(self.popen)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for it to exit; its exit code, or None."""
        if self.popen is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.popen.wait(timeout)
        return None

    def log_text(self) -> str:
        """Everything it wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        """The end of its log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def kill_under(directory: Path, deadline_s: float = 5.0) -> list[int]:
    """SIGKILL every process whose working directory is under ``directory`` (machines the local
    API could not stop, e.g. because it was killed itself); returns their pids."""
    root = str(directory.resolve())
    killed: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    end = time.monotonic() + deadline_s
    while killed and time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in killed):
        time.sleep(0.05)
    return killed
