"""Identifiers in Fly's formats: machine ids, ULIDs, volume ids, nonces, generated names."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import UTC, datetime

from scaler.local.clock import wall

__all__ = [
    "app_id",
    "event_ms",
    "image_ref",
    "lease_nonce",
    "machine_id",
    "machine_name",
    "private_ip",
    "rfc3339",
    "ulid",
    "volume_id",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"
_ADJECTIVES = (
    "aged", "ancient", "autumn", "billowing", "bitter", "black", "blue", "bold", "broad", "broken",
    "calm", "cold", "cool", "crimson", "curly", "damp", "dark", "dawn", "delicate", "divine",
    "dry", "empty", "falling", "fancy", "flat", "floral", "fragrant", "frosty", "gentle", "green",
    "hidden", "holy", "icy", "jolly", "late", "lingering", "little", "lively", "long", "lucky",
    "misty", "morning", "muddy", "mute", "nameless", "noisy", "odd", "old", "orange", "patient",
    "plain", "polished", "proud", "purple", "quiet", "rapid", "raspy", "red", "restless", "rough",
    "round", "royal", "shiny", "shrill", "shy", "silent", "small", "snowy", "soft", "solitary",
    "sparkling", "spring", "square", "steep", "still", "summer", "super", "sweet", "throbbing",
    "tight", "tiny", "twilight", "wandering", "weathered", "white", "wild", "winter", "wispy",
    "withered", "yellow", "young",
)
_NOUNS = (
    "art", "band", "bar", "base", "bird", "block", "boat", "bonus", "bread", "breeze", "brook",
    "bush", "butterfly", "cake", "cell", "cherry", "cloud", "credit", "darkness", "dawn", "dew",
    "disk", "dream", "dust", "feather", "field", "fire", "firefly", "flower", "fog", "forest",
    "frog", "frost", "glade", "glitter", "grass", "hall", "hat", "haze", "heart", "hill", "king",
    "lab", "lake", "leaf", "limit", "math", "meadow", "mode", "moon", "morning", "mountain",
    "mouse", "mud", "night", "paper", "pine", "poetry", "pond", "queen", "rain", "recipe",
    "resonance", "rice", "river", "salad", "scene", "sea", "shadow", "shape", "silence", "sky",
    "smoke", "snow", "snowflake", "sound", "star", "sun", "sunset", "surf", "term", "thunder",
    "tooth", "tree", "truth", "union", "unit", "violet", "voice", "water", "waterfall", "wave",
    "wildflower", "wind", "wood",
)

# Ids need not be reproducible (they are not part of the seeded fault stream), only unique.
_rng = random.SystemRandom()


def ulid(now: float | None = None) -> str:
    """A 26-char ULID (48-bit ms timestamp + 80 random bits), Crockford base32."""
    ms = int((wall() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def machine_id() -> str:
    """14 lowercase hex digits, like ``1857156b526dd8``."""
    return os.urandom(7).hex()


def app_id() -> str:
    """16 lowercase alphanumerics, like ``z4k69dxd8r31p5mx``."""
    return "".join(_rng.choice(_ALNUM) for _ in range(16))


def volume_id() -> str:
    """``vol_`` + 16 lowercase alphanumerics."""
    return "vol_" + "".join(_rng.choice(_ALNUM) for _ in range(16))


def lease_nonce() -> str:
    """12 lowercase hex digits."""
    return os.urandom(6).hex()


def machine_name() -> str:
    """``adjective-noun-NNNN``, like ``aged-thunder-7371``."""
    return f"{_rng.choice(_ADJECTIVES)}-{_rng.choice(_NOUNS)}-{_rng.randrange(1000, 10000)}"


def private_ip() -> str:
    """A 6PN-looking IPv6 address."""
    a, b, c, d = (_rng.randrange(0x10000) for _ in range(4))
    return f"fdaa:0:1:a7b:{a:x}:{b:x}:{c:x}:{d % 16 + 2:x}"


def rfc3339(epoch: float) -> str:
    """``2023-11-08T01:52:30Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_ms(epoch: float) -> int:
    """Unix milliseconds, as Fly's event timestamps."""
    return int(epoch * 1000)


def image_ref(image: str) -> dict[str, str]:
    """Split ``registry/repository:tag`` the way Fly reports ``image_ref``."""
    ref, _, digest = image.partition("@")
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "registry-1.docker.io", ref
    if "/" not in path and registry == "registry-1.docker.io":
        path = "library/" + path
    repository, _, tag = path.partition(":")
    fake_digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return {
        "registry": registry,
        "repository": repository,
        "tag": tag or "latest",
        "digest": digest or fake_digest,
    }
