"""The background sampler: Redis snapshots into the collector and, on the leader, into MySQL."""
