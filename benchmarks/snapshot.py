"""Snapshot benchmark: Sidekiq's Redis with 200 queues and 500 processes (Sidekiq 7 layout, the
shapes of tests/sidekiq/layouts.py) at two sizes, 1,000,000 enqueued jobs and 100,000 retries,
and a tenth of that. For each it counts read_snapshot's Redis round trips and times it, then
times a Prometheus scrape of that snapshot: generate_latest, and GET /prometheus/metrics through
the app. The two sizes live in two databases and are timed alternately, run by run, so load from
other processes on the machine falls on both alike.

    .venv/bin/python -m benchmarks.snapshot
    # BENCH_REDIS_URL (redis://127.0.0.1:6379/13: the large layout), BENCH_SMALL_REDIS_URL
    # (.../12: the small one), BENCH_SNAPSHOT_RUNS (20), BENCH_SCRAPE_RUNS (200)

Both databases are flushed at the start and at the end. Targets: the same round trips at both
sizes, snapshot and scrape times that do not grow with the job count, scrapes under 10 ms median.
Prints PASS/MISS per target and writes benchmarks/results/snapshot.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from app.config import Settings
from app.domain import Snapshot
from app.exporter.collector import SidekiqCollector
from app.main import SupervisorApp, create_app
from app.sampler.runner import Sampler
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from tests.sidekiq.layouts import V7, Held, job, process

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
SMALL_REDIS_URL = os.environ.get("BENCH_SMALL_REDIS_URL", "redis://127.0.0.1:6379/12")
SNAPSHOT_RUNS = int(os.environ.get("BENCH_SNAPSHOT_RUNS", "20"))
SCRAPE_RUNS = int(os.environ.get("BENCH_SCRAPE_RUNS", "200"))
WARMUP_RUNS = 3

QUEUES = 200
PROCESSES = 500
HOSTS = 50
CONCURRENCY = 10
BUSY_PER_PROCESS = 5
QUEUES_PER_PROCESS = 8
LARGE = (1_000_000, 100_000)  # (enqueued jobs, retries)
SMALL = (100_000, 10_000)
BATCH = 250  # values per LPUSH/ZADD: even the small layout fills every queue
BATCHES_PER_ROUND_TRIP = 80
ENQUEUED_SPREAD_SECONDS = 3600.0

TARGET_SCRAPE_MS = 10.0
# "Does not grow": the large layout's median within 25% of the small one's (timing noise).
TARGET_GROWTH = 1.25


@dataclass(slots=True)
class Tally:
    """What went over the wire: one send per command or pipeline, one reply per command."""

    round_trips: int = 0
    replies: int = 0


def counting_connection(tally: Tally) -> type[Connection]:
    class CountingConnection(Connection):
        async def send_packed_command(
            self, command: bytes | str | Iterable[bytes], check_health: bool = True
        ) -> None:
            tally.round_trips += 1
            await super().send_packed_command(command, check_health)

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            tally.replies += 1
            return await super().read_response(*args, **kwargs)

    return CountingConnection


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock figures, plus the median CPU time of this process: on a shared machine the
    wall clock includes waiting for a core, CPU time does not."""

    median_ms: float
    p95_ms: float
    min_ms: float
    cpu_median_ms: float
    runs: int


@dataclass(frozen=True, slots=True)
class SizeResult:
    enqueued: int
    retries: int
    populate_seconds: float
    round_trips: int
    commands: int
    snapshot: Timing
    scrape: Timing
    http_scrape: Timing
    scrape_bytes: int


def timing(wall_s: list[float], cpu_s: list[float]) -> Timing:
    ordered = sorted(wall_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Timing(
        median_ms=round(statistics.median(ordered) * 1000, 3),
        p95_ms=round(p95 * 1000, 3),
        min_ms=round(ordered[0] * 1000, 3),
        cpu_median_ms=round(statistics.median(cpu_s) * 1000, 3),
        runs=len(ordered),
    )


Call = Callable[[], Awaitable[object]]


async def alternately(runs: int, calls: Mapping[str, Call]) -> dict[str, Timing]:
    """Times each call `runs` times, taking turns, after WARMUP_RUNS untimed calls of each."""
    for call in calls.values():
        for _ in range(WARMUP_RUNS):
            await call()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            await call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: timing(wall[name], cpu[name]) for name in calls}


def queue_name(n: int) -> str:
    return f"queue-{n:03d}"


async def add_processes(redis: Redis, keys: Keys) -> None:
    """500 heartbeats as Sidekiq 7 writes them, each with 5 running jobs; made persistent, as
    the benchmark outlives the 60 s heartbeat TTL."""
    now = time.time()
    for n in range(PROCESSES):
        served = [
            queue_name((n * QUEUES_PER_PROCESS + i) % QUEUES) for i in range(QUEUES_PER_PROCESS)
        ]
        busy = [(f"{n:012x}{i:012x}", served[i], now - 5 * i) for i in range(BUSY_PER_PROCESS)]
        identity = await process(
            redis, keys, V7, hostname=f"worker-{n % HOSTS:02d}", concurrency=CONCURRENCY,
            queues=served, busy=busy,
        )  # fmt: skip
        await redis.persist(keys.process(identity))


async def add_jobs(redis: Redis, keys: Keys, start: int, stop: int) -> None:
    """Jobs start..stop-1, LPUSHed round-robin over the queues (oldest first, as Sidekiq does),
    as Sidekiq 7's client writes them."""
    now = time.time()
    await redis.sadd(keys.queues, *(queue_name(q) for q in range(QUEUES)))
    pipe = redis.pipeline(transaction=False)
    for first in range(start, stop, BATCH):
        queue = queue_name(first // BATCH % QUEUES)
        age = ENQUEUED_SPREAD_SECONDS * (1 - first / stop)
        payloads = [
            orjson.dumps(job(V7, queue, enqueued_at=now - age) | {"args": [n, "two"]})
            for n in range(first, min(first + BATCH, stop))
        ]
        pipe.lpush(keys.queue(queue), *payloads)
        if len(pipe) >= BATCHES_PER_ROUND_TRIP:
            await pipe.execute()
    await pipe.execute()


async def add_retries(redis: Redis, keys: Keys, start: int, stop: int) -> None:
    """Failed jobs waiting in `retry`, scored by their next retry time (float seconds)."""
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for first in range(start, stop, BATCH):
        entries: dict[bytes, float] = {}
        for n in range(first, min(first + BATCH, stop)):
            failed = job(V7, queue_name(n % QUEUES), enqueued_at=now - 600) | {
                "error_class": "Net::ReadTimeout",
                "error_message": f"Net::ReadTimeout with #<TCPSocket:(closed)> (job {n})",
                "failed_at": now - 590,
                "retry_count": n % 25,
            }
            entries[orjson.dumps(failed)] = now + 15 + n % 86_400
        pipe.zadd(keys.retry, entries)
        if len(pipe) >= BATCHES_PER_ROUND_TRIP:
            await pipe.execute()
    await pipe.execute()


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    collector = SidekiqCollector(Held(snapshot), max_age_seconds=3600)
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


@dataclass(slots=True)
class Layout:
    """One populated database and what was measured on it."""

    name: str
    url: str
    enqueued: int
    retries: int
    tally: Tally = field(default_factory=Tally)
    populate_seconds: float = 0.0
    round_trips: int = 0
    commands: int = 0

    def client(self) -> Redis:
        return Redis.from_url(self.url, connection_class=counting_connection(self.tally))

    async def populate(self, redis: Redis) -> None:
        started = time.perf_counter()
        keys = Keys()
        await redis.flushdb()
        await add_processes(redis, keys)
        await add_jobs(redis, keys, 0, self.enqueued)
        await add_retries(redis, keys, 0, self.retries)
        self.populate_seconds = round(time.perf_counter() - started, 2)
        print(f"{self.name}: {self.enqueued:,} jobs, {self.retries:,} retries in "
              f"{self.populate_seconds:.1f} s")  # fmt: skip

    async def count_round_trips(self, redis: Redis) -> Snapshot:
        """One snapshot on a warm connection, counted."""
        await read_snapshot(redis, Keys())
        self.tally.round_trips = self.tally.replies = 0
        snapshot = await read_snapshot(redis, Keys())
        self.round_trips, self.commands = self.tally.round_trips, self.tally.replies
        if (snapshot.enqueued, snapshot.retries) != (self.enqueued, self.retries):
            raise RuntimeError(f"{self.name}: {snapshot.enqueued=}, {snapshot.retries=}")
        return snapshot


async def time_http_scrapes(snapshots: Mapping[str, Snapshot], tmp: Path) -> dict[str, Timing]:
    """GET /prometheus/metrics through the whole app (lifespan running, sampler off), the
    collector holding each snapshot in turn (a reference swap, as the sampler does)."""
    settings = Settings(
        _env_file=None,
        DATABASE_URL=f"sqlite:///{tmp / 'bench.db'}",
        REDIS_URL=REDIS_URL,
        SAMPLER_ENABLED=False,
    )
    app: SupervisorApp = create_app(settings)
    async with app.router.lifespan_context(app):
        # The benchmark plays the sampler: each scrape renders the snapshot it swaps in.
        sampler: Sampler = app.state.resources.sampler
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            def scrape_of(snapshot: Snapshot) -> Call:
                async def scrape() -> None:
                    sampler.latest = snapshot
                    response = await client.get("/prometheus/metrics")
                    if b"sidekiq_queue_enqueued_jobs" not in response.content:
                        raise RuntimeError(f"scrape without Sidekiq metrics: {response.text}")

                return scrape

            calls = {name: scrape_of(snapshot) for name, snapshot in snapshots.items()}
            return await alternately(SCRAPE_RUNS, calls)


def reader(redis: Redis) -> Call:
    async def read() -> Snapshot:
        return await read_snapshot(redis, Keys())

    return read


def render(registry: CollectorRegistry) -> Call:
    async def scrape() -> bytes:
        return generate_latest(registry)

    return scrape


async def run(tmp: Path) -> list[SizeResult]:
    layouts = [Layout("small", SMALL_REDIS_URL, *SMALL), Layout("large", REDIS_URL, *LARGE)]
    clients = {layout.name: layout.client() for layout in layouts}
    try:
        snapshots = {}
        for layout in layouts:
            await layout.populate(clients[layout.name])
            snapshots[layout.name] = await layout.count_round_trips(clients[layout.name])
        reads = await alternately(SNAPSHOT_RUNS, {n: reader(r) for n, r in clients.items()})
        registries = {name: registry_for(snapshot) for name, snapshot in snapshots.items()}
        scrapes = await alternately(SCRAPE_RUNS, {n: render(r) for n, r in registries.items()})
        gets = await time_http_scrapes(snapshots, tmp)
    finally:
        for redis in clients.values():
            await redis.flushdb()
            await redis.aclose()
    return [
        SizeResult(
            enqueued=layout.enqueued,
            retries=layout.retries,
            populate_seconds=layout.populate_seconds,
            round_trips=layout.round_trips,
            commands=layout.commands,
            snapshot=reads[layout.name],
            scrape=scrapes[layout.name],
            http_scrape=gets[layout.name],
            scrape_bytes=len(generate_latest(registries[layout.name])),
        )
        for layout in layouts
    ]


def verdicts(results: list[SizeResult]) -> dict[str, bool]:
    small, large = results[0], results[-1]
    return {
        "round trips constant": len({r.round_trips for r in results}) == 1,
        "snapshot time flat in job count": (
            large.snapshot.median_ms <= TARGET_GROWTH * small.snapshot.median_ms
        ),
        f"scrape median < {TARGET_SCRAPE_MS:g} ms": all(
            max(r.scrape.median_ms, r.http_scrape.median_ms) < TARGET_SCRAPE_MS for r in results
        ),
        "scrape time flat in job count": (
            large.http_scrape.median_ms <= TARGET_GROWTH * small.http_scrape.median_ms
        ),
    }


def report(results: list[SizeResult], passed: dict[str, bool]) -> None:
    print(f"\n{QUEUES} queues, {PROCESSES} processes ({PROCESSES * BUSY_PER_PROCESS} running jobs)")
    print(f"{'enqueued':>9} {'retries':>8} {'trips':>5} {'cmds':>5}  {'ms':<23}"
          f" {'median':>7} {'p95':>7} {'min':>7} {'cpu':>7}")  # fmt: skip
    for r in results:
        rows = [
            ("read_snapshot", r.snapshot),
            ("generate_latest", r.scrape),
            ("GET /prometheus/metrics", r.http_scrape),
        ]
        for n, (name, t) in enumerate(rows):
            sizes = f"{r.enqueued:>9,} {r.retries:>8,} {r.round_trips:>5} {r.commands:>5}"
            print(
                f"{sizes if n == 0 else ' ' * len(sizes)}  {name:<23} {t.median_ms:>7.2f}"
                f" {t.p95_ms:>7.2f} {t.min_ms:>7.2f} {t.cpu_median_ms:>7.2f}"
            )
    print()
    for target, ok in passed.items():
        print(f"{'PASS' if ok else 'MISS'}  {target}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(Path(tmp)))
    passed = verdicts(results)
    report(results, passed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "layout": {
            "queues": QUEUES,
            "processes": PROCESSES,
            "running_jobs": PROCESSES * BUSY_PER_PROCESS,
            "sidekiq_layout": V7.name,
        },
        "sizes": [asdict(r) for r in results],
        "targets": passed,
    }
    (RESULTS / "snapshot.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'snapshot.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
