"""Logging: JSON and console output, context variables, and nothing secret ever leaks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from scaler.secret import Secret
from scaler.telemetry.logging import (
    MASK,
    configure_logging,
    redact,
    redact_text,
    register_secret,
    registered_secret_count,
)

CANARY = "cAnArY-7b3f9e21-tok"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def emit_everything() -> None:
    """Log the canary every way it could leak."""
    log = structlog.get_logger("test.canary")
    log.info("as_value", note=CANARY)
    log.info("in_dict", payload={"outer": {"inner": f"x{CANARY}y"}, "list": [CANARY]})
    log.info("by_key", token="short", authorization="Basic abc", api_key=Secret("k"))
    log.info("in_url", url=f"redis://:{CANARY}@redis:6379/0", other="https://u:pw9@h/x")
    log.info(f"in event {CANARY}")
    log.info("header", header=f"Authorization: Bearer {CANARY}")
    try:
        raise RuntimeError(f"boom with {CANARY}")
    except RuntimeError:
        log.exception("failed")

    def leaky(token: str) -> None:
        secret_local = token  # noqa: F841 (a local that must not be rendered)
        raise ValueError("no secret in the message")

    try:
        leaky(CANARY)
    except ValueError:
        log.exception("locals")
    std = logging.getLogger("dramatiq.test")
    std.warning("stdlib %s", CANARY)
    try:
        raise KeyError(CANARY)
    except KeyError:
        std.exception("stdlib exception")
    logging.getLogger("httpx").info("HTTP Request: GET https://u:pw9@api.machines.dev/v1")


def test_json_output_leaks_nothing() -> None:
    out = io.StringIO()
    configure_logging(json=True, secrets=[CANARY], stream=out)
    emit_everything()
    text = out.getvalue()
    assert CANARY not in text and "pw9" not in text and "Basic abc" not in text
    events = [json.loads(line) for line in text.splitlines()]
    by_name = {e["event"]: e for e in events}
    assert by_name["as_value"]["note"] == MASK
    assert by_name["in_dict"]["payload"] == {"outer": {"inner": f"x{MASK}y"}, "list": [MASK]}
    assert by_name["by_key"]["token"] == MASK
    assert by_name["by_key"]["authorization"] == MASK
    assert by_name["by_key"]["api_key"] == MASK
    assert by_name["in_url"]["url"] == f"redis://:{MASK}@redis:6379/0"
    assert by_name["in_url"]["other"] == f"https://u:{MASK}@h/x"
    assert by_name["header"]["header"] == f"Authorization: Bearer {MASK}"
    assert "boom with " + MASK in by_name["failed"]["exception"]
    assert "Traceback" in by_name["failed"]["exception"]
    assert "secret_local" not in by_name["locals"]["exception"]
    assert by_name["stdlib " + MASK]["logger"] == "dramatiq.test"
    assert by_name["stdlib exception"]["level"] == "error"
    assert MASK in by_name["stdlib exception"]["exception"]
    assert all(e["timestamp"].endswith("Z") and "T" in e["timestamp"] for e in events)


def test_console_output_leaks_nothing() -> None:
    out = io.StringIO()
    configure_logging(json=False, secrets=[CANARY], stream=out)
    emit_everything()
    text = out.getvalue()
    assert CANARY not in text and "pw9" not in text
    assert "as_value" in text and "Traceback" in text and "boom with" in text
    assert "secret_local" not in text
    assert not text.lstrip().startswith("{")


def test_json_is_default_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info("hello", n=1)
    assert json.loads(out.getvalue())["n"] == 1


def test_contextvars_reach_every_event() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    structlog.contextvars.bind_contextvars(tick_id="t-42")
    structlog.get_logger("a").info("one")
    logging.getLogger("b").warning("two")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e.get("tick_id") for e in events] == ["t-42", "t-42"]


def test_level_filters_and_reconfigure_replaces_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, level="warning", stream=first)
    configure_logging(json=True, level="warning", stream=second)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert first.getvalue() == ""
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["loud"]
    with pytest.raises(ValueError, match="log level 'chatty'"):
        configure_logging(level="chatty", stream=first)


def test_register_secret_at_runtime() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    late = "late-registered-secret-99"
    register_secret(Secret(late))
    structlog.get_logger().info("later", value=f"[{late}]")
    assert json.loads(out.getvalue())["value"] == f"[{MASK}]"


def test_short_and_empty_secrets_are_ignored() -> None:
    before = registered_secret_count()
    register_secret("")
    register_secret("ab")
    register_secret(None)
    assert registered_secret_count() == before
    assert redact_text("ab cd") == "ab cd"


def test_redact_processor_directly() -> None:
    register_secret("outer-secret-xyz")
    event = redact(
        None, "info", {"event": "e", "password": "p", "count": 3, "nested": ("outer-secret-xyz",)}
    )
    assert event == {"event": "e", "password": MASK, "count": 3, "nested": [MASK]}
    assert redact_text("FlyV1 fm2_abcdef,more") == f"FlyV1 {MASK},more"


def test_httpx_request_lines_only_at_debug() -> None:
    """Per-request lines from httpx are debugging detail: not at info, shown at debug."""
    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        configure_logging(json=True, level=level, stream=out)
        logging.getLogger("httpx").info('HTTP Request: GET http://x/v1/apps "HTTP/1.1 200 OK"')
        logging.getLogger("httpx").warning("a warning still shows")
        lines = out.getvalue()
        assert ("HTTP Request" in lines) is shown
        assert "a warning still shows" in lines
    logging.getLogger("httpx").setLevel(logging.NOTSET)
