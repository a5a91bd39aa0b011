"""Sidekiq's Redis unreachable, as the service answers it: SidekiqUnavailable (503, Retry-After).
The app's one handler for redis-py's errors translates them here, whichever route met them."""

from __future__ import annotations

from app.errors import Unavailable

UNREACHABLE = "Sidekiq's Redis did not answer ({reason}); try again shortly"


class SidekiqUnavailable(Unavailable):
    """Sidekiq's Redis cannot be reached or did not answer in time."""

    error = "redis_unavailable"


def redis_unavailable(exc: BaseException, *, retry_after_seconds: int) -> SidekiqUnavailable:
    """The 503 for a redis-py (or socket) error: it names Redis and the driver's reason."""
    reason = str(exc).strip() or type(exc).__name__
    return SidekiqUnavailable(
        UNREACHABLE.format(reason=reason), retry_after_seconds=retry_after_seconds
    )
