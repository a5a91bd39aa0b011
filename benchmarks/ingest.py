"""Ingest benchmark: wrk drives the job lifecycle (queued, started, complete; form-encoded as the
original Faraday middleware sends it) at the service on a scratch MariaDB database, then, in the
same run, at the service with redaction on (SUPERVISOR_REDACT_KEYS and _PATTERNS, on a scratch
database of its own; the arguments hold no secret, so this is the parse-and-scan every job pays),
and at a bare uvicorn ASGI handler that parses the same body and answers 201: the ceiling on this
machine.

    make bench-ingest        # BENCH_SECONDS (15), BENCH_WARMUP_SECONDS (3), BENCH_CONNECTIONS (32),
                             # BENCH_MYSQL_URL (mysql://root@127.0.0.1:3306)

Any SUPERVISOR_* variable in the environment reaches the service (e.g. WRITER_CONNECTIONS).
Prints PASS/MISS per target, writes benchmarks/results/ingest.json, exits 1 only when the run
itself failed: a process did not start, wrk failed, a request errored, or an ack was not stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.throwaway import RESULTS, ROOT, Database, query, scratch_database

SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
WARMUP_SECONDS = int(os.environ.get("BENCH_WARMUP_SECONDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = 2
HOST = "127.0.0.1"
SCRIPT = ROOT / "benchmarks" / "lifecycle.lua"
BIN = Path(sys.executable).parent
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0
RSS_SAMPLE_SECONDS = 0.25

TARGET_RATIO = 0.4
TARGET_P99_MS = 25.0
# "Flat": RSS at the end of the measured run is within 10% of RSS at its start.
TARGET_RSS_GROWTH = 0.10
# The redacting side: a few key globs and a card-number pattern, as README's example.
REDACT_ENV = {
    "SUPERVISOR_REDACT_KEYS": "password,passwd,*_token,*secret*,api_key",
    "SUPERVISOR_REDACT_PATTERNS": json.dumps([r"\b\d{4}(?:[ -]?\d{4}){3}\b"]),
}


class RunFailed(Exception):
    """The benchmark could not produce a valid figure (not a missed target)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int


@dataclass(slots=True)
class RssSamples:
    """VmRSS of one process, sampled every RSS_SAMPLE_SECONDS while wrk runs (KiB)."""

    pid: int
    kib: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        if not self.kib:
            raise RunFailed(f"no RSS samples for pid {self.pid}")
        start, mid, end = self.kib[0], self.kib[len(self.kib) // 2], self.kib[-1]
        return {
            "start_mib": start / 1024,
            "mid_mib": mid / 1024,
            "end_mib": end / 1024,
            "max_mib": max(self.kib) / 1024,
            "growth": (end - start) / start,
        }


@dataclass(frozen=True, slots=True)
class Side:
    """One server's measured run."""

    name: str
    wrk: WrkResult
    rss: dict[str, float]


# Processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def read_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RunFailed(f"no VmRSS for pid {pid}")


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RunFailed(f"{what} not ready within {START_TIMEOUT_SECONDS:g}s")


def _healthz(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _accepts(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1.0):
        return True


@contextmanager
def running(
    name: str, command: list[str], env: dict[str, str], ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` (output to results/<name>.log), wait until ready, SIGTERM on exit."""
    log = (RESULTS / f"{name}.log").open("wb")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until(ready, proc, name)
        yield proc
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# wrk ---------------------------------------------------------------------------------------


def run_wrk(base: str, seconds: int, prefix: str) -> WrkResult:
    """One wrk run of lifecycle.lua; jids start with `prefix`."""
    command = [
        "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
        "-s", str(SCRIPT), base, "--", prefix,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("wrk-json ")), None)
    if done.returncode != 0 or line is None:
        raise RunFailed(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(line.removeprefix("wrk-json "))
    elapsed = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"],
        seconds=elapsed,
        requests_per_second=raw["requests"] / elapsed,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        p999_ms=raw["p999_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        non_2xx=raw["status_errors"],
        socket_errors=sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors"))
        + raw["timeouts"],
    )


def sample_rss(samples: RssSamples, stop: threading.Event) -> None:
    while not stop.is_set():
        samples.kib.append(read_rss_kib(samples.pid))
        stop.wait(RSS_SAMPLE_SECONDS)
    samples.kib.append(read_rss_kib(samples.pid))


def measure(name: str, base: str, pid: int, prefix: str) -> Side:
    """Warm up, then the measured wrk run with RSS sampled throughout."""
    run_wrk(base, WARMUP_SECONDS, "w" + prefix[1:])
    samples, stop = RssSamples(pid), threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(samples, stop), daemon=True)
    sampler.start()
    try:
        result = run_wrk(base, SECONDS, prefix)
    finally:
        stop.set()
        sampler.join()
    return Side(name, result, samples.summary())


# The two sides -----------------------------------------------------------------------------


def writer_metrics(base: str) -> dict[str, float]:
    """Mean batch size and commit time from the service's own histograms."""
    text = httpx.get(f"{base}/prometheus/metrics", timeout=5.0).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("supervisor_writer_batch_") and not sample.labels:
                values[sample.name] = sample.value
    count = values.get("supervisor_writer_batch_size_count", 0.0)
    return {
        "batches": count,
        "mean_batch_events": values.get("supervisor_writer_batch_size_sum", 0.0) / (count or 1),
        "mean_batch_ms": 1000
        * values.get("supervisor_writer_batch_seconds_sum", 0.0)
        / (count or 1),
    }


def bench_service(
    db: Database, prefix: str, name: str = "service", **settings: str
) -> tuple[Side, dict[str, float]]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port)]
    env = db.env(SUPERVISOR_LOG_LEVEL="warning", **settings)
    with running(name, command, env, lambda: _healthz(base)) as proc:
        side = measure(name, base, proc.pid, prefix)
        return side, writer_metrics(base)


def bench_redacting(prefix: str) -> tuple[Side, dict[str, int]]:
    """The service with redaction on, on a scratch database of its own (the same starting
    point as the plain side: an empty ledger)."""
    with scratch_database() as db:
        side, _ = bench_service(db, prefix, "redacting", **REDACT_ENV)
        return side, count_stored(db, prefix)


def bench_bare(prefix: str) -> Side:
    port = free_port()
    command = [
        str(BIN / "uvicorn"), "benchmarks.bare_asgi:app", "--loop", "uvloop", "--http",
        "httptools", "--no-access-log", "--log-level", "warning", "--host", HOST,
        "--port", str(port),
    ]  # fmt: skip
    with running("bare", command, dict(os.environ), lambda: _accepts(port)) as proc:
        return measure("bare", f"http://{HOST}:{port}", proc.pid, prefix)


def count_stored(db: Database, prefix: str) -> dict[str, int]:
    """Timeline rows and ledger rows whose jid belongs to the measured run."""

    async def counts() -> dict[str, int]:
        like = f"LIKE '{prefix}%'"
        events = await query(db, f"SELECT COUNT(*) FROM job_events WHERE jid {like}")
        jobs = await query(db, f"SELECT COUNT(*) FROM jobs WHERE jid {like}")
        return {"job_events": int(events[0][0]), "jobs": int(jobs[0][0])}

    return asyncio.run(counts())


# Report ------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(sides: list[Side]) -> None:
    print(f"\n{'':9} {'req/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99.9':>7} "
          f"{'max ms':>7} {'non-2xx':>7} {'RSS start/mid/end MiB':>23}")  # fmt: skip
    for side in sides:
        w, r = side.wrk, side.rss
        rss = f"{r['start_mib']:.1f}/{r['mid_mib']:.1f}/{r['end_mib']:.1f}"
        print(
            f"{side.name:9} {w.requests_per_second:9.0f} {w.p50_ms:7.2f} {w.p90_ms:7.2f} "
            f"{w.p99_ms:7.2f} {w.p999_ms:7.2f} {w.max_ms:7.1f} {w.non_2xx:7d} {rss:>23}"
        )


def targets(service: Side, ratio: float) -> dict[str, bool]:
    p99_ok = service.wrk.p99_ms < TARGET_P99_MS
    rss_ok = service.rss["growth"] <= TARGET_RSS_GROWTH
    return {
        f"ratio >= {TARGET_RATIO}x the bare ceiling": ratio >= TARGET_RATIO,
        f"p99 < {TARGET_P99_MS:g} ms at {CONNECTIONS} connections": p99_ok,
        f"RSS flat (growth <= {TARGET_RSS_GROWTH:.0%} over the run)": rss_ok,
    }


def checks(service: Side, stored: dict[str, int]) -> dict[str, bool]:
    """Correctness of the run: no errors, and every acknowledged event is in the timeline.

    wrk counts only answered requests; up to one request per connection may still have been in
    flight (and committed) when it stopped, so the timeline may hold that many more.
    """
    acked = service.wrk.requests - service.wrk.non_2xx
    unacked_stored = stored["job_events"] - acked
    no_errors = service.wrk.non_2xx == 0 and service.wrk.socket_errors == 0
    all_stored = 0 <= unacked_stored <= CONNECTIONS
    return {
        "every request answered 201": no_errors,
        f"acked <= job_events <= acked + {CONNECTIONS} (in flight at the stop)": all_stored,
    }


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = secrets.token_hex(4)
    print(f"ingest: {SECONDS}s per side after {WARMUP_SECONDS}s warm-up, wrk -t{THREADS} "
          f"-c{CONNECTIONS}, jid prefix {prefix}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    redact_prefix = secrets.token_hex(4)
    try:
        with scratch_database() as db:
            service, writer = bench_service(db, prefix)
            stored = count_stored(db, prefix)
        redacting, redact_stored = bench_redacting(redact_prefix)
        bare = bench_bare(prefix)
    except (RunFailed, RuntimeError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    ratio = service.wrk.requests_per_second / bare.wrk.requests_per_second
    redaction = redacting.wrk.requests_per_second / service.wrk.requests_per_second
    print_table([service, redacting, bare])
    print(f"\nratio service/bare: {ratio:.2f}x   writer: {writer['mean_batch_events']:.1f} "
          f"events/batch, {writer['mean_batch_ms']:.2f} ms/batch")  # fmt: skip
    print(f"ratio redacting/service: {redaction:.2f}x (redaction on vs off, same run)")
    acked = service.wrk.requests - service.wrk.non_2xx
    print(f"acked {acked} events; stored {stored['job_events']} job_events, {stored['jobs']} jobs")
    goals, sound = targets(service, ratio), checks(service, stored)
    sound |= {f"redacting: {label}": ok for label, ok in checks(redacting, redact_stored).items()}
    for label, ok in goals.items():
        print(f"  {_mark(ok)}  {label}")
    for label, ok in sound.items():
        print(f"  {'ok  ' if ok else 'FAIL'}  {label}")
    _write(service, bare, ratio, writer, stored, goals, sound, redacting, redaction)
    return 0 if all(sound.values()) else 1


def _write(
    service: Side,
    bare: Side,
    ratio: float,
    writer: dict[str, float],
    stored: dict[str, int],
    goals: dict[str, bool],
    sound: dict[str, bool],
    redacting: Side,
    redaction_ratio: float,
) -> None:
    result: dict[str, Any] = {
        "seconds": SECONDS,
        "connections": CONNECTIONS,
        "threads": THREADS,
        "service": asdict(service),
        "redacting": asdict(redacting),
        "bare": asdict(bare),
        "ratio": ratio,
        "redaction_ratio": redaction_ratio,
        "redact_settings": REDACT_ENV,
        "writer": writer,
        "stored": stored,
        "targets": goals,
        "checks": sound,
        "settings": {k: v for k, v in os.environ.items() if k.startswith("SUPERVISOR_WRITER")},
    }
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'ingest.json').relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
