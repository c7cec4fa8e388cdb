"""``scaler local-api``: serve the local Machines API in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from scaler.local.app import create_app
from scaler.local.config import LocalAPIConfig, is_loopback
from scaler.local.faults import FaultSpec

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``scaler local-api``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=4280, help="port (default 4280, as Fly's)")
    parser.add_argument("--runtime", choices=["process", "sim"], default="process",
                        help="process: machines are local processes; sim: simulated")
    parser.add_argument("--token", default=None,
                        help="bearer token to require (default: a random one, printed)")
    parser.add_argument("--timings", choices=["fast", "realistic"], default="realistic",
                        help="realistic (default): Fly-like delays (a create takes about 3 s "
                        "to start); fast: every transition at once, for tests")
    parser.add_argument("--rate-limits", choices=["fly", "off"], default="fly",
                        help="fly (default): Fly's per-app limits, answered with 429; off: none")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (requires --token)")
    parser.add_argument("--faults", default=None,
                        help="fault spec: JSON, @FILE, or OP.field=value,... (see BEHAVIOUR.md)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where machine directories and logs go (default: a temp dir)")
    parser.add_argument("--image", action="append", default=[], metavar="IMAGE=CMD",
                        help="command a process machine of IMAGE runs when its config has none")
    parser.add_argument("--image-files", action="append", default=[], metavar="IMAGE=DIR",
                        help="files of IMAGE: copied into a process machine's fresh root "
                        "directory on every start (default: an empty root)")
    parser.add_argument("--sim-run-seconds", type=float, default=None,
                        help="sim: seconds a machine runs before exiting 0 (default: forever)")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; every machine process is stopped on the way out."""
    if not is_loopback(args.host) and args.allow_remote and not args.token:
        print("scaler local-api: --allow-remote requires --token (an explicit secret)",
              file=sys.stderr)
        return 2
    images: dict[str, list[str]] = {}
    for item in args.image:
        image, eq, cmd = item.partition("=")
        if not eq or not image or not cmd.strip():
            print(f"scaler local-api: --image {item!r}: use IMAGE=CMD, e.g. "
                  "--image worker:latest='python -m workers.runner'", file=sys.stderr)
            return 2
        images[image] = cmd.split()
    image_files: dict[str, Path] = {}
    for item in args.image_files:
        image, eq, directory = item.partition("=")
        if not eq or not image or not Path(directory).is_dir():
            print(f"scaler local-api: --image-files {item!r}: use IMAGE=DIR with an existing "
                  "directory, e.g. --image-files worker:latest=./image-root", file=sys.stderr)
            return 2
        image_files[image] = Path(directory)
    faults = args.faults
    if faults and faults.startswith("@"):
        try:
            faults = Path(faults[1:]).read_text()
        except OSError as exc:
            print(f"scaler local-api: --faults {args.faults}: cannot read the file: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
    if faults:
        try:
            FaultSpec.parse(faults)
        except ValueError as exc:
            print(f"scaler local-api: --faults: {exc} (expected JSON, @FILE or "
                  "OP.field=value,...; see scaler/local/BEHAVIOUR.md)", file=sys.stderr)
            return 2
    generated = args.token is None
    token = args.token or secrets.token_hex(16)
    try:
        config = LocalAPIConfig(
            host=args.host, port=args.port, runtime=args.runtime, token=token,
            timings=args.timings, rate_limits=args.rate_limits, allow_remote=args.allow_remote,
            faults=faults, seed=args.seed, workdir=args.workdir, images=images,
            image_files=image_files,
            sim_run_seconds=args.sim_run_seconds,
        )
    except ValueError as exc:
        print(f"scaler local-api: {exc}", file=sys.stderr)
        return 2
    # Bind before printing anything: a busy port must not first print an export line for a
    # server that never answers.
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        print(f"scaler local-api: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}; stop what uses it or pick another with --port",
              file=sys.stderr)
        return 2
    app = create_app(config)
    url = f"http://{args.host}:{args.port}"
    print(f"local Machines API on {url} (runtime={args.runtime}, timings={args.timings}, "
          f"rate limits={args.rate_limits}); machine files in {app.workdir}")
    print("Point a client at it with:")
    print(f"  export FLY_API_URL={url}")
    if generated:  # the user chose a token already; do not echo theirs back into logs
        print(f"  export FLY_API_TOKEN={token}")
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning", lifespan="on",
                                           date_header=False))  # the app dates in its clock

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve(sockets=[sock])

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        app.engine.runtime.kill_all_now()
    return 0
