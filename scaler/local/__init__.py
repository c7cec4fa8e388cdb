"""The local Machines API: a faithful, runnable implementation of Fly's Machines API that runs
machines as local processes (``process`` runtime) or simulates them (``sim``, for scale tests).

Deliberate choices where Fly's behaviour is undocumented are listed in ``BEHAVIOUR.md``.
"""

from scaler.local.app import create_app
from scaler.local.config import LocalAPIConfig, Timings
from scaler.local.server import LocalAPIServer

__all__ = ["LocalAPIConfig", "LocalAPIServer", "Timings", "create_app"]
