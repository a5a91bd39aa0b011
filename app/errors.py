"""Errors the service answers with; each carries its HTTP status, one handler renders them all."""

from __future__ import annotations


class AppError(Exception):
    """Base: `error` is a stable code, `detail` says what was wrong in words."""

    status = 500
    error = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(AppError):
    status = 400
    error = "bad_request"


class Unauthorized(AppError):
    status = 401
    error = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    """Signed in, but the role may not do this (read-only), or a form's CSRF token is wrong."""

    status = 403
    error = "forbidden"


class NotFound(AppError):
    status = 404
    error = "not_found"


class PayloadTooLarge(AppError):
    status = 413
    error = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    error = "unsupported_media_type"


class InvalidInput(AppError):
    """A field failed validation; `fields` maps each field to its problem."""

    status = 422
    error = "invalid_input"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields


class TooManyRequests(AppError):
    """Too many failed sign-ins from this address or for this account: wait `Retry-After`."""

    status = 429
    error = "too_many_requests"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class Unavailable(AppError):
    """A dependency is down or saturated; the client should retry after a while."""

    status = 503
    error = "unavailable"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})
