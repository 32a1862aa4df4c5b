"""The error taxonomy shared by every layer.

Mapped to HTTP once in the gateway and to retry/commit decisions once in the Kafka consumer,
following the seed's gRPC status codes (reference §2.1, §6.5).  Never match on message text.
"""

from __future__ import annotations


class ChronoverseError(Exception):
    """Base class.  ``code`` is a stable machine-readable string used in error bodies."""

    code: str = "internal"
    #: Whether a consumer should retry the record in place (reference §6.5 retryable codes).
    retryable: bool = True

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Invalid(ChronoverseError):
    """Malformed input (gRPC InvalidArgument, HTTP 400)."""

    code = "invalid_argument"
    retryable = False


class NotFound(ChronoverseError):
    """Missing, or owned by somebody else (HTTP 404)."""

    code = "not_found"
    retryable = False


class AlreadyExists(ChronoverseError):
    """Unique conflict (HTTP 409)."""

    code = "already_exists"
    retryable = False


class Conflict(ChronoverseError):
    """Concurrent modification or an in-flight duplicate (gRPC Aborted, HTTP 409). Retryable."""

    code = "conflict"
    retryable = True


class PreconditionFailed(ChronoverseError):
    """The request is well-formed but the state forbids it (HTTP 412)."""

    code = "failed_precondition"
    retryable = False


class Unauthenticated(ChronoverseError):
    """No or bad credentials (HTTP 401)."""

    code = "unauthenticated"
    retryable = False


class PermissionDenied(ChronoverseError):
    """Authenticated but not allowed, e.g. a bad CSRF token (HTTP 403)."""

    code = "permission_denied"
    retryable = False


class RateLimited(ChronoverseError):
    """Too many attempts (gRPC ResourceExhausted, HTTP 429).  Retryable for consumers."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(ChronoverseError):
    """A dependency is down or timed out (HTTP 503).  Retryable."""

    code = "unavailable"
    retryable = True


class Timeout(ChronoverseError):
    """Deadline exceeded (HTTP 504).  Retryable."""

    code = "deadline_exceeded"
    retryable = True


class Internal(ChronoverseError):
    """A bug or unexpected state (HTTP 500).  Retryable, as in the seed."""

    code = "internal"
    retryable = True
