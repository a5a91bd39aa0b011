"""Sidekiq Supervisor: a durable job ledger, Redis sampling and Prometheus metrics for Sidekiq."""

__version__ = "0.1.0"
