"""The numbers behind `make bench`: ingest throughput against a bare ASGI ceiling (ingest.py)
and console query latency over a million-row ledger (console.py), each on a scratch database."""
