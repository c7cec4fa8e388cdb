"""The ``process`` runtime: each machine's main process is a real local process in its own
process group, with Fly's environment, a working directory and a log file.

What it runs (first that applies): ``init.exec``; ``init.entrypoint`` + ``init.cmd``; the
``images`` mapping (by full image reference, then by repository without tag). A leading
``python``/``python3`` becomes this interpreter (``sys.executable``), so ``python -m pkg`` resolves
in the server's virtualenv.

Each machine has its own root directory, ``<workdir>/machines/<id>/root``: the process's working
directory, ``HOME`` and ``FLY_LOCAL_ROOT``. Every start of the main process (create, a start from
``stopped`` or ``failed``, a restart after an exit, a replace) empties it and fills it from the
image's files (the ``image_files`` mapping, empty by default), as Fly boots a fresh root filesystem
from the image each time; a resume from ``suspended`` keeps it (and the frozen process's memory).
The log, ``machine.log``, sits beside ``root`` and so survives every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal as signals
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scaler.local.model import MachineRecord
from scaler.local.runtime import ExitCallback, RuntimeStartError

__all__ = ["ProcessRuntime", "image_source", "resolve_command"]

_PASSTHROUGH_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


def resolve_command(config: Mapping[str, Any], images: Mapping[str, list[str]]) -> list[str]:
    """The argv a machine with ``config`` runs (raise :class:`RuntimeStartError` if none)."""
    init = config.get("init") or {}
    argv: list[str] = []
    if init.get("exec"):
        argv = [str(a) for a in init["exec"]]
    elif init.get("entrypoint") or init.get("cmd"):
        argv = [str(a) for a in (init.get("entrypoint") or []) + (init.get("cmd") or [])]
    else:
        image = str(config.get("image", ""))
        repo = image.split("@", 1)[0]
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        mapped = images.get(image) or images.get(repo)
        if mapped:
            argv = list(mapped)
    if not argv:
        raise RuntimeStartError(
            f"no command for image {config.get('image')!r}: set config.init.exec or "
            "config.init.cmd, or map the image with --image IMAGE=CMD"
        )
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def image_source(image: str, image_files: Mapping[str, Path]) -> Path | None:
    """The directory holding ``image``'s files: by full reference, then by repository."""
    repo = image.split("@", 1)[0]
    repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    return image_files.get(image) or image_files.get(repo)


def reset_root(root: Path, source: Path | None) -> None:
    """Make ``root`` hold exactly the image's files (nothing when ``source`` is None)."""
    if root.exists() or root.is_symlink():
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():  # rmtree left something (read-only dirs): fail loudly, not leak files
            raise RuntimeStartError(f"cannot reset the root directory {root}")
    if source is not None:
        shutil.copytree(source, root, symlinks=True)
    else:
        root.mkdir(parents=True)


def machine_env(machine: MachineRecord) -> dict[str, str]:
    """The environment Fly gives a machine: parent basics, Fly's variables, then config.env."""
    env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
    guest = machine.config.get("guest") or {}
    metadata = machine.config.get("metadata") or {}
    env.update(
        {
            "FLY_APP_NAME": machine.app,
            "FLY_MACHINE_ID": machine.id,
            "FLY_ALLOC_ID": machine.id,
            "FLY_REGION": machine.region,
            "FLY_IMAGE_REF": str(machine.config.get("image", "")),
            "FLY_PRIVATE_IP": machine.private_ip,
            "FLY_MACHINE_VERSION": machine.instance_id,
            "FLY_PROCESS_GROUP": str(metadata.get("fly_process_group", "app")),
            "FLY_VM_MEMORY_MB": str(guest.get("memory_mb", 256)),
            "PRIMARY_REGION": machine.region,
        }
    )
    for key, value in (machine.config.get("env") or {}).items():
        env[str(key)] = str(value)
    return env


class _Proc:
    __slots__ = ("exit_code", "forced_code", "proc", "token", "waiter")

    def __init__(self, proc: asyncio.subprocess.Process, token: int) -> None:
        self.proc = proc
        self.token = token
        self.forced_code: int | None = None
        self.exit_code: int | None = None
        self.waiter: asyncio.Task[None] | None = None


class ProcessRuntime:
    """Main processes as local processes, one process group each, under ``workdir``."""

    def __init__(
        self,
        on_exit: ExitCallback,
        workdir: Path,
        images: Mapping[str, list[str]] | None = None,
        image_files: Mapping[str, Path] | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._workdir = workdir
        self._images = dict(images or {})
        self._image_files = {k: Path(v) for k, v in (image_files or {}).items()}
        self._volume_dir = workdir / "volumes"
        self._procs: dict[str, _Proc] = {}
        self._stopping: set[str] = set()

    def machine_dir(self, machine: MachineRecord) -> Path:
        """The machine's directory: its log ``machine.log`` and its root directory ``root``."""
        return self._workdir / "machines" / machine.id

    def root_dir(self, machine: MachineRecord) -> Path:
        """The machine's root directory (reset from the image on every start)."""
        return self.machine_dir(machine) / "root"

    async def start(self, machine: MachineRecord, run_token: int) -> None:
        argv = resolve_command(machine.config, self._images)
        home = self.machine_dir(machine)
        home.mkdir(parents=True, exist_ok=True)
        cwd = self.root_dir(machine)
        source = image_source(str(machine.config.get("image", "")), self._image_files)
        try:
            await asyncio.to_thread(reset_root, cwd, source)
        except OSError as exc:
            raise RuntimeStartError(f"cannot prepare the root directory: {exc}") from None
        for mount in machine.config.get("mounts") or []:
            self._link_mount(cwd, mount)
        env = machine_env(machine)
        env.setdefault("HOME", str(cwd))
        env["FLY_LOCAL_ROOT"] = str(cwd)
        log = (home / "machine.log").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # own session => own process group, pgid == pid
            )
        except OSError as exc:
            raise RuntimeStartError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        finally:
            log.close()
        entry = _Proc(proc, run_token)
        self._procs[machine.id] = entry
        entry.waiter = asyncio.create_task(self._watch(machine, entry))

    def _link_mount(self, cwd: Path, mount: Mapping[str, Any]) -> None:
        volume = str(mount.get("volume", ""))
        rel = str(mount.get("path", "/data")).strip("/") or "data"
        target = self._volume_dir / volume
        target.mkdir(parents=True, exist_ok=True)
        link = cwd / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)

    async def _watch(self, machine: MachineRecord, entry: _Proc) -> None:
        rc = await entry.proc.wait()
        entry.exit_code = rc
        _killpg(entry.proc.pid, signals.SIGKILL)  # the VM is gone: so are its other processes
        if self._procs.get(machine.id) is entry:
            del self._procs[machine.id]
        if machine.id in self._stopping:
            return  # stop() reports this exit itself
        sig = -rc if rc < 0 else None
        code = entry.forced_code if entry.forced_code is not None else _exit_code(rc)
        self._on_exit(machine, entry.token, code, sig)

    async def stop(self, machine: MachineRecord, signal: int, grace: float) -> int | None:
        entry = self._procs.get(machine.id)
        if entry is None:
            return None
        self._stopping.add(machine.id)
        try:
            _killpg(entry.proc.pid, signals.SIGCONT)  # a frozen process cannot handle signals
            _killpg(entry.proc.pid, signal)
            try:
                await asyncio.wait_for(asyncio.shield(entry.proc.wait()), grace)
            except TimeoutError:
                _killpg(entry.proc.pid, signals.SIGKILL)
                await entry.proc.wait()
            if entry.waiter is not None:
                await entry.waiter
            rc = entry.proc.returncode
            return None if rc is None else _exit_code(rc)
        finally:
            self._stopping.discard(machine.id)

    def signal(self, machine: MachineRecord, signal: int) -> bool:
        entry = self._procs.get(machine.id)
        if entry is None:
            return False
        _killpg(entry.proc.pid, signal)
        return True

    def inject_exit(self, machine: MachineRecord, exit_code: int) -> bool:
        entry = self._procs.get(machine.id)
        if entry is None:
            return False
        entry.forced_code = exit_code
        _killpg(entry.proc.pid, signals.SIGKILL)
        return True

    def suspend(self, machine: MachineRecord) -> None:
        entry = self._procs.get(machine.id)
        if entry is not None:
            _killpg(entry.proc.pid, signals.SIGSTOP)

    def resume(self, machine: MachineRecord) -> None:
        entry = self._procs.get(machine.id)
        if entry is not None:
            _killpg(entry.proc.pid, signals.SIGCONT)

    def running(self, machine: MachineRecord) -> bool:
        return machine.id in self._procs

    def pids(self) -> list[int]:
        return [e.proc.pid for e in list(self._procs.values())]

    async def close(self) -> None:
        entries = list(self._procs.items())
        self._stopping.update(mid for mid, _ in entries)
        for _, entry in entries:
            _killpg(entry.proc.pid, signals.SIGKILL)
        for _, entry in entries:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await entry.proc.wait()
            if entry.waiter is not None:
                entry.waiter.cancel()
        self._procs.clear()

    def kill_all_now(self) -> None:
        for entry in list(self._procs.values()):
            _killpg(entry.proc.pid, signals.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    """A shell-style exit code: death by signal N is 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode
