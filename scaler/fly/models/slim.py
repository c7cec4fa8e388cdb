"""The slim listing: the few fields of a listed machine a scaler reads, decoded with msgspec.

A machine in Fly's list answer is about 1.3 KB of JSON (config, env, services, image, checks,
events); the scaler's tick reads a dozen fields of it, for thousands of machines, every tick.
:class:`ListedMachine` declares only those fields: msgspec skips everything else in C, without
building a Python object for it. Fields Fly adds are ignored, missing or ``null`` ones are
``None``; a field of the wrong type makes the answer unreadable (a
:class:`msgspec.ValidationError`), as the full model would.

:class:`SlimListing` keeps each machine's JSON object as Fly sent it (a :class:`msgspec.Raw`, no
copy) and decodes it on demand, so a caller can skip machines whose bytes did not change since
the last listing (the scaler's ``scaler.loop.listing.ViewCache`` does).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

__all__ = ["ListedConfig", "ListedEvent", "ListedGuest", "ListedMachine", "SlimListing",
           "decode_listed", "decode_slim_listing"]


class ListedEvent(msgspec.Struct, frozen=True):
    """One entry of a machine's ``events`` (newest first): its status and when (Unix ms)."""

    status: str | None = None
    timestamp: int | float | None = None


class ListedGuest(msgspec.Struct, frozen=True):
    """``config.guest``: the machine's memory."""

    memory_mb: int | None = None


class ListedConfig(msgspec.Struct, frozen=True):
    """``config``: the machine's metadata and guest."""

    metadata: dict[str, str] | None = None
    guest: ListedGuest | None = None


class ListedMachine(msgspec.Struct, frozen=True):
    """One listed machine, slim: identity, state, placement, times, events and config."""

    id: str | None = None
    name: str | None = None
    state: str | None = None
    region: str | None = None
    instance_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    events: list[ListedEvent] | None = None
    config: ListedConfig | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """``config.metadata`` (empty when absent)."""
        config = self.config
        return (config.metadata if config is not None else None) or {}


_one = msgspec.json.Decoder(ListedMachine)
_items = msgspec.json.Decoder(list[msgspec.Raw] | None)


def decode_listed(item: msgspec.Raw | bytes) -> ListedMachine:
    """One machine's JSON object (as Fly sent it) as a :class:`ListedMachine`.

    Raises:
        msgspec.ValidationError: it is not an object, or a field has the wrong type.
    """
    return _one.decode(item)


class SlimListing:
    """One list answer: each machine's JSON object as sent (:attr:`items`), decoded on demand
    (:meth:`machines`, iteration)."""

    __slots__ = ("items",)

    def __init__(self, items: list[msgspec.Raw]) -> None:
        self.items = items
        """Each machine's JSON object, as Fly sent it (bytes-like, sharing the answer's buffer)."""

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ListedMachine]:
        return (_one.decode(item) for item in self.items)

    def machines(self) -> list[ListedMachine]:
        """Every machine, decoded.

        Raises:
            msgspec.ValidationError: a machine is not an object, or a field has the wrong type.
        """
        return [_one.decode(item) for item in self.items]

    def __repr__(self) -> str:
        return f"SlimListing({len(self.items)} machines)"


def decode_slim_listing(body: bytes) -> SlimListing:
    """A list answer's body (a JSON array, ``null`` or nothing) as a :class:`SlimListing`; the
    machines themselves are decoded on demand.

    Raises:
        msgspec.DecodeError: the body is not JSON, or not an array.
    """
    return SlimListing((_items.decode(body) or []) if body.strip() else [])
