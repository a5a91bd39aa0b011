"""Settings that more than one part of the service reads the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.config import Settings

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_stuck_rule_comes_from_the_stuck_settings() -> None:
    """One definition of stuck: the reconciler's thresholds and the GUI's filter."""
    settings = Settings(
        _env_file=None, STUCK_AFTER_SECONDS=600, STUCK_AFTER_BY_CLASS={"SlowJob": 7200}
    )
    rule = settings.stuck_rule(NOW)
    assert rule.cutoff_for("SlowJob") == NOW - timedelta(hours=2)
    assert rule.cutoff_for("AnyOther") == NOW - timedelta(minutes=10)
    assert rule.latest_cutoff == NOW - timedelta(minutes=10)
