"""Durations as people write them in config files: ``"500ms"``, ``"30s"``, ``"15m"``, ``"2h"``,
``"1h30m"``, or a plain number of seconds. Always returned as float seconds."""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_HELP", "format_duration", "parse_duration"]

DURATION_HELP = 'a duration like "500ms", "30s", "15m", "2h", "1h30m" or a number of seconds'

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ``ValueError`` (saying what is accepted) for anything else.

    Negative, infinite and NaN durations are refused; booleans are not numbers here.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text.startswith("-"):
            raise ValueError(f"a duration cannot be negative; use {DURATION_HELP}")
        try:
            seconds = float(text)
        except ValueError:
            if not text or not _WHOLE.fullmatch(text):
                raise ValueError(f"expected {DURATION_HELP}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(f"expected {DURATION_HELP}, got {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"expected a finite duration: {DURATION_HELP}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative; use {DURATION_HELP}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``0.5`` -> ``"500ms"``, ``90`` -> ``"1m30s"``, ``7200`` -> ``"2h"``."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = []
    if h:
        parts.append(f"{h}h")
    if m:
        parts.append(f"{m}m")
    if s or frac or not parts:
        parts.append(f"{s + frac:g}s")
    return "".join(parts)
