"""Every error the GitHub client raises.

::

    GitHubError                 base of everything below
    ├── GitHubAPIError          GitHub answered with an error status
    │   └── RateLimited         a primary or secondary rate limit; ``retry_at`` (epoch seconds)
    └── GitHubTransportError    no HTTP answer (connect error, timeout, dropped connection)

Messages are built from the operation (``generate_jitconfig``), the status and GitHub's own
``message``, never from request headers or bodies: no token, JWT, private key or JIT config can
appear in one.
"""

from __future__ import annotations

__all__ = ["GitHubAPIError", "GitHubError", "GitHubTransportError", "RateLimited"]


class GitHubError(Exception):
    """Base of every error raised by ``scaler.github.client``."""


class GitHubAPIError(GitHubError):
    """GitHub answered ``status_code`` to ``operation``; ``message`` is GitHub's explanation."""

    def __init__(self, operation: str, status_code: int, message: str | None = None) -> None:
        self.operation = operation
        self.status_code = status_code
        self.message = message
        text = f"GitHub {operation}: {status_code}"
        super().__init__(f"{text} {message}" if message else text)


class RateLimited(GitHubAPIError):
    """GitHub's rate limit holds ``operation`` back until ``retry_at`` (epoch seconds); raised
    without sending anything while that time has not come, so nothing hammers GitHub."""

    def __init__(
        self, operation: str, status_code: int, message: str | None, retry_at: float
    ) -> None:
        super().__init__(operation, status_code, message)
        self.retry_at = retry_at


class GitHubTransportError(GitHubError):
    """No answer from GitHub for ``operation`` (``cause`` is the transport error's type name)."""

    def __init__(self, operation: str, cause: str) -> None:
        super().__init__(f"GitHub {operation}: no answer ({cause})")
        self.operation = operation
        self.cause = cause
