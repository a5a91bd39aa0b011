"""The background sampler: the latest Redis snapshot and, on the leader, history in MySQL."""
