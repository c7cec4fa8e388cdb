"""Fly's region codes, light to import (config checks and per-job options use them).

The list is the regions Fly offers new machines in (``GET /v1/platform/regions`` without the
deprecated ones, November 2026). A region Fly adds later is refused until it is added here; the
error lists the known codes so a typo is easy to see.
"""

from __future__ import annotations

__all__ = ["REGIONS", "region_problem"]

REGIONS: dict[str, str] = {
    "ams": "Amsterdam, Netherlands",
    "arn": "Stockholm, Sweden",
    "bom": "Mumbai, India",
    "cdg": "Paris, France",
    "dfw": "Dallas, Texas (US)",
    "ewr": "Secaucus, NJ (US)",
    "fra": "Frankfurt, Germany",
    "gru": "Sao Paulo, Brazil",
    "iad": "Ashburn, Virginia (US)",
    "jnb": "Johannesburg, South Africa",
    "lax": "Los Angeles, California (US)",
    "lhr": "London, United Kingdom",
    "nrt": "Tokyo, Japan",
    "ord": "Chicago, Illinois (US)",
    "sin": "Singapore, Singapore",
    "sjc": "San Jose, California (US)",
    "syd": "Sydney, Australia",
    "yyz": "Toronto, Canada",
}
"""Region code -> location."""


def region_problem(code: object) -> str | None:
    """Why ``code`` is not a Fly region (naming the valid codes), or None if it is one."""
    if isinstance(code, str) and code in REGIONS:
        return None
    return f"{code!r} is not a Fly region; use one of {', '.join(REGIONS)}"
