"""A small TOML writer for scaler configs built as dicts (the standard library only reads TOML).

Supports what a config holds: strings, numbers, booleans, lists of scalars, nested tables (inline
when inside a list or a value), and lists of tables (``[[pools]]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps"]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything a config holds
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def _key(k: str) -> str:
    bare = k.replace("-", "").replace("_", "").isalnum()
    return k if bare else json.dumps(k)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(path: str, body: Mapping[str, Any], out: list[str], header: str) -> None:
    if header:
        out.append(header)
    for k, v in body.items():
        if not isinstance(v, Mapping) and not _is_table_list(v):
            out.append(f"{_key(k)} = {_value(v)}")
    out.append("")
    for k, v in body.items():
        sub = f"{path}.{_key(k)}" if path else _key(k)
        if isinstance(v, Mapping):
            _table(sub, v, out, f"[{sub}]")
        elif _is_table_list(v):
            for item in v:
                _table(sub, item, out, f"[[{sub}]]")


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document."""
    out: list[str] = []
    _table("", data, out, "")
    return "\n".join(out).strip() + "\n"
