"""How problems are worded: pydantic's errors turned into one line each, naming the key the user
wrote, the value given (never a secret) and what would be accepted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from pydantic import (
    BaseModel,
)

from scaler.config.schema import Settings
from scaler.config.values import _did_you_mean, _Problems, mask_url

# --- errors -------------------------------------------------------------------------------------

_SECRET_PATHS = {("fly", "token"), ("redis", "url"), ("http", "enqueue_tokens")}


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
                text = f'"{text}"'
            out += f".{text}" if out else text
    return out or "(top level)"


def _section(loc: tuple[str | int, ...]) -> str:
    if not loc:
        return "the top level"
    if len(loc) == 2 and loc[0] == "pools" and isinstance(loc[1], int):
        return f"[[pools]] #{loc[1] + 1}"
    if len(loc) == 2 and loc[0] == "apps":
        return f"[apps.{loc[1]}]"
    if len(loc) == 1:
        return f"[{loc[0]}]"
    return _path(loc)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is not None and type(None) in get_args(tp):
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    tp: Any = Settings
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                field = next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _show(loc: tuple[str | int, ...], value: Any) -> str:
    if any(loc[: len(p)] == p for p in _SECRET_PATHS):
        if loc[:2] == ("redis", "url") and isinstance(value, str):
            return mask_url(value)
        return "(hidden)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_error(err: Mapping[str, Any], env_sources: Mapping[tuple[str, ...], str]) -> list[str]:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    src = env_sources.get(tuple(str(p) for p in loc))
    where = _path(loc) + (f" (from env {src})" if src else "")
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        model = _model_at(parent)
        allowed = _keys_of(model) if model else []
        if parent == () or (model and key not in allowed):
            hint = _did_you_mean(key, allowed)
            if not hint and allowed:
                hint = f" (known keys: {', '.join(allowed)})"
            return [f"unknown key {key!r} in {_section(parent)}{hint}"]
    if kind == "missing":
        return [f"{where}: required key is missing"]
    ctx = err.get("ctx") or {}
    exc = ctx.get("error")
    if isinstance(exc, _Problems):
        return [f"{_path(loc + sub)}: {msg}" for sub, msg in exc.problems]
    msg = str(err["msg"])
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    msg = msg.replace("valid tuple", "list").replace("valid dictionary", "table")
    if "[key]" in err["loc"]:
        msg = f"bad key: {msg}"
    shown = _show(loc, err.get("input"))
    if shown in msg:
        return [f"{where}: {msg}"]
    return [f"{where}: {msg}; got {shown}"]
