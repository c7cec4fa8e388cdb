"""Structured logging: JSON lines in production, readable lines in a terminal, secrets redacted.

:func:`configure_logging` sets up structlog *and* the standard library (dramatiq, httpx, uvicorn) so
every event, ours or a library's, goes through the same processors: context variables merged (bind a
tick or request id with ``structlog.contextvars.bind_contextvars`` and every event carries it), an
ISO-8601 UTC timestamp, the exception rendered as plain text without local variables, then
:func:`redact`, then the renderer.

Redaction masks (a) the values of keys named like a credential (``token``, ``secret``,
``password``, ``authorization``, ``api_key``, ...), (b) every registered secret string wherever it
appears, exception text and tracebacks included (:func:`register_secret`; the config loader
registers the Fly token, the Redis password and the enqueue tokens), and (c) credentials in URLs
(``redis://:pass@host`` becomes ``redis://:**********@host``) and bearer/FlyV1 authorization values.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from scaler.secret import MASK, Secret

__all__ = [
    "MASK",
    "configure_logging",
    "redact",
    "redact_text",
    "register_secret",
    "registered_secret_count",
]

# Shorter strings would mask ordinary words; such secrets are still masked by key name.
MIN_SECRET_LENGTH = 4

_SENSITIVE_KEY = re.compile(
    r"(token|secret|passw(or)?d|pwd|authorization|auth_header|api[_-]?key|credential|cookie"
    r"|private[_-]?key)",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*):[^/@\s]*@"
)
_AUTH_VALUE = re.compile(r"(?P<kind>\b(?:Bearer|FlyV1|Basic|Token)\s+)[^\s,;'\"]+", re.IGNORECASE)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_secret_rx: re.Pattern[str] | None = None


def register_secret(value: str | Secret | None) -> None:
    """Mask ``value`` wherever it appears in any later log event (ignored if empty or very short).

    Redaction is by exact substring, so register the secret itself, not a string containing it.
    """
    global _secrets, _secret_rx
    text = value.get_secret_value() if isinstance(value, Secret) else value
    if not text or len(text) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if text in _secrets:
            return
        # longest first, so a secret containing another is masked whole
        _secrets = tuple(sorted((*_secrets, text), key=len, reverse=True))
        _secret_rx = re.compile("|".join(re.escape(s) for s in _secrets))


def registered_secret_count() -> int:
    """How many secret strings are registered (for tests and diagnostics; never the values)."""
    return len(_secrets)


def redact_text(text: str) -> str:
    """``text`` with registered secrets, URL credentials and authorization values masked."""
    rx = _secret_rx
    if rx is not None:
        text = rx.sub(MASK, text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _AUTH_VALUE.sub(lambda m: f"{m['kind']}{MASK}", text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Secret):
        return str(value)
    if depth > 8:
        return MASK
    if isinstance(value, Mapping):
        return {str(k): _mask_if_sensitive(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    # Anything else is rendered with repr() by the renderers: redact that text instead.
    return redact_text(repr(value))


def _mask_if_sensitive(key: str, value: Any, depth: int) -> Any:
    if _SENSITIVE_KEY.search(key):
        if isinstance(value, list | tuple):
            return [MASK for _ in value]
        if value not in (None, "", False) and not isinstance(value, bool | int | float | Mapping):
            return MASK
    return _redact_value(value, depth)


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask credentials in every key and value of the event."""
    return {str(k): _mask_if_sensitive(str(k), v, 0) for k, v in event_dict.items()}


def _render_exception(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Turn ``exc_info`` into a plain ``exception`` string: no locals, no colours, redactable."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        formatted = structlog.processors.format_exc_info(
            logger, method_name, {"exc_info": exc_info}
        )
        if "exception" in formatted:
            event_dict["exception"] = formatted["exception"]
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so reconfiguring replaces it instead of adding another."""


_CHATTY = ("httpx", "httpcore")
"""Libraries whose info lines are per request: shown only at ``debug``."""


def configure_logging(
    *,
    json: bool | None = None,
    level: str = "info",
    secrets: Iterable[str | Secret] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and stdlib logging for the whole process (safe to call again).

    ``json=None`` means JSON lines unless ``stream`` (default stderr) is a terminal. ``level`` is a
    level name (``debug``, ``info``, ``warning``, ``error``). ``secrets`` are registered with
    :func:`register_secret` first.
    """
    for s in secrets:
        register_secret(s)
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"log level {level!r} is not known; use debug, info, warning, error or critical"
        )
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=hasattr(out, "isatty") and out.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _render_exception,
            redact,
            renderer,
        ],
    )
    handler = _Handler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _Handler):
            root.removeHandler(h)
            h.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # One line per HTTP request is debugging detail: at info they were half the log. Fly's errors
    # are logged by the client with their cause, so nothing an operator needs is lost.
    for name in _CHATTY:
        chatty = logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        logging.getLogger(name).setLevel(chatty)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
