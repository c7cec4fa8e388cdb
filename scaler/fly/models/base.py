"""Base of every wire model, and the signal names Fly's spec uses."""

from __future__ import annotations

import signal as _signal
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "FlyModel",
    "signal_name",
]


class FlyModel(BaseModel):
    """Base of every wire model: unknown fields are kept; requests drop unset fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body to send: unset (``None``) fields left out, extra fields kept."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


def signal_name(sig: str | int) -> str:
    """A signal as Fly's spec spells it (``"SIGTERM"``); numbers (fly-go sends 9) become names."""
    if isinstance(sig, bool):
        raise ValueError(f"signal={sig!r} is not a signal: use a name like 'SIGTERM' or a number")
    if isinstance(sig, int):
        try:
            return _signal.Signals(sig).name
        except ValueError:
            raise ValueError(f"signal={sig} is not a known signal number") from None
    name = sig.strip().upper()
    return name if name.startswith("SIG") else f"SIG{name}"
