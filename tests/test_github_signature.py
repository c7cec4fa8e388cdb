"""X-Hub-Signature-256: GitHub's documented test vector, and every way a signature can be wrong."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from scaler.github.signature import SignatureError, sign, verify
from scaler.secret import Secret

VECTOR = json.loads((Path(__file__).parent / "data/github/webhook-signature-test-vector.json")
                    .read_text())
SECRET = Secret("a webhook secret of some length")
BODY = b'{"action":"queued","workflow_job":{"id":1}}'


def test_githubs_documented_test_vector_verifies() -> None:
    body = VECTOR["payload"].encode("utf-8")
    verify(Secret(VECTOR["secret"]), body, VECTOR["x_hub_signature_256"])
    assert sign(Secret(VECTOR["secret"]), body) == VECTOR["x_hub_signature_256"]
    assert VECTOR["x_hub_signature_256"] == "sha256=" + VECTOR["signature_hex"]


def test_a_valid_signature_verifies() -> None:
    header = "sha256=" + hmac.new(SECRET.get_secret_value().encode(), BODY,
                                  hashlib.sha256).hexdigest()
    verify(SECRET, BODY, header)
    verify(SECRET, BODY, header.upper().replace("SHA256=", "sha256="))  # hex case does not matter


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("sha1=" + "0" * 40, "malformed"),  # the legacy X-Hub-Signature is not accepted
        ("SHA256=" + "0" * 64, "malformed"),
        ("0" * 64, "malformed"),
        ("sha256=" + "0" * 63, "malformed"),
        ("sha256=" + "g" * 64, "malformed"),
        ("sha256=" + "0" * 64, "mismatch"),
    ],
)
def test_a_missing_or_malformed_or_wrong_signature_is_refused(
    header: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, BODY, header)
    assert caught.value.reason == reason


def test_a_body_changed_by_one_byte_is_refused() -> None:
    header = sign(SECRET, BODY)
    for i in (0, len(BODY) // 2, len(BODY) - 1):
        altered = BODY[:i] + bytes([BODY[i] ^ 1]) + BODY[i + 1:]
        with pytest.raises(SignatureError) as caught:
            verify(SECRET, altered, header)
        assert caught.value.reason == "mismatch"
    with pytest.raises(SignatureError):
        verify(SECRET, BODY + b" ", header)


def test_another_secret_is_refused() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(Secret("another secret"), BODY, sign(SECRET, BODY))
    assert caught.value.reason == "mismatch"


def test_an_empty_secret_is_a_configuration_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="empty"):
        verify(Secret(""), BODY, sign(Secret("x"), BODY))


def test_the_error_never_shows_the_secret_or_the_expected_digest() -> None:
    expected = sign(SECRET, BODY).removeprefix("sha256=")
    for header in (None, "sha256=zz", "sha256=" + "1" * 64):
        with pytest.raises(SignatureError) as caught:
            verify(SECRET, BODY, header)
        text = f"{caught.value} {caught.value!r}"
        assert SECRET.get_secret_value() not in text
        assert expected not in text
        assert BODY.decode() not in text
