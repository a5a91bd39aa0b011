"""Middleware cost benchmark: the time clients/ruby/sidekiq_supervisor.rb adds to a Sidekiq job
and to a push, in real Sidekiq 6.4.1 (concurrency 1), with the supervisor up (the real service on
a scratch MariaDB database), refusing connections, and hung (accepts, never answers), for the
background sender (default) and inline mode.

    .venv/bin/python -m benchmarks.middleware
    # BENCH_MIDDLEWARE_JOBS (1000 jobs with and 1000 without our middleware per case),
    # BENCH_MIDDLEWARE_PUSHES (1000 pushes of each kind per case), BENCH_MYSQL_URL

In each case one Sidekiq process runs no-op jobs with and without our server middleware,
interleaved (benchmarks/middleware.rb); an outermost timer measures each job's whole middleware
chain, so the difference is what our middleware adds (two events: started, complete). Pushes are
timed the same way in one Ruby process (benchmarks/middleware_client.rb; one event: queued).
Target: under 1 ms added per job with the background sender, whatever the supervisor's state.
Prints a table and PASS/MISS, and writes benchmarks/results/middleware.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from benchmarks.throwaway import RESULTS, ROOT, scratch_database
from tests.live import hung_supervisor, refused_url, run_supervisor
from tests.sidekiq.real_sidekiq import RealSidekiq, job, run_ruby, start_sidekiq

JOBS = int(os.environ.get("BENCH_MIDDLEWARE_JOBS", "1000"))
PUSHES = int(os.environ.get("BENCH_MIDDLEWARE_PUSHES", "1000"))
SERVER_RUBY = ROOT / "benchmarks" / "middleware.rb"
CLIENT_RUBY = ROOT / "benchmarks" / "middleware_client.rb"
CHAIN = "supervisor-bench:chain"
QUEUE = "bench"
TARGET_SECONDS = 0.001
RUN_TIMEOUT_SECONDS = 300.0
STATES = ("up", "refused", "hung")
MODES = ("background", "inline")


@dataclass(frozen=True, slots=True)
class Added:
    """Seconds a side's middleware chain took without and with ours, and the difference."""

    median_without: float
    median_with: float
    median: float  # median with, minus median without
    mean: float  # mean with, minus mean without
    p99: float  # p99 with, minus p99 without
    max_with: float

    @classmethod
    def of(cls, without: Sequence[float], with_ours: Sequence[float]) -> Added:
        return cls(
            median_without=statistics.median(without),
            median_with=statistics.median(with_ours),
            median=statistics.median(with_ours) - statistics.median(without),
            mean=statistics.fmean(with_ours) - statistics.fmean(without),
            p99=_p99(with_ours) - _p99(without),
            max_with=max(with_ours),
        )


@dataclass(frozen=True, slots=True)
class Case:
    supervisor: str
    mode: str
    jobs: int
    job: Added  # per job: two events
    push: Added  # per push: one event


def _p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def measure(state: str, url: str, mode: str, log_dir: Path) -> Case:
    env = {
        "SIDEKIQ_TEST_REQUIRE": str(SERVER_RUBY),
        "SIDEKIQ_SUPERVISOR_URL": url,
        "SIDEKIQ_SUPERVISOR_MODE": mode,
        "BENCH_MIDDLEWARE_PUSHES": str(PUSHES),
    }
    async with start_sidekiq(log_dir, queues=(QUEUE,), concurrency=1, extra_env=env) as sidekiq:
        flags = ("on", "off") * JOBS
        await sidekiq.push(*(job("NoopJob", QUEUE, flag, n) for n, flag in enumerate(flags)))
        timings = await _chain_timings(sidekiq, len(flags))
        pushes: dict[str, list[float]] = orjson.loads(await run_ruby(CLIENT_RUBY, sidekiq.env))
    return Case(
        supervisor=state,
        mode=mode,
        jobs=JOBS,
        job=Added.of(timings["off"], timings["on"]),
        push=Added.of(pushes["off"], pushes["on"]),
    )


async def _chain_timings(sidekiq: RealSidekiq, count: int) -> dict[str, list[float]]:
    async def all_ran() -> bool:
        return int(await sidekiq.redis.llen(CHAIN)) >= count

    await sidekiq.wait_until(all_ran, f"{count} jobs to run", RUN_TIMEOUT_SECONDS)
    timings: dict[str, list[float]] = {"on": [], "off": []}
    for entry in await sidekiq.redis.lrange(CHAIN, 0, -1):
        flag, seconds = (entry.decode() if isinstance(entry, bytes) else entry).split()
        timings[flag].append(float(seconds))
    return timings


async def measure_all(urls: dict[str, str], log_dir: Path) -> list[Case]:
    cases = []
    for state in STATES:
        for mode in MODES:
            case_dir = log_dir / f"{state}-{mode}"  # made by main()
            cases.append(await measure(state, urls[state], mode, case_dir))
            print(f"measured: supervisor {state}, {mode}", file=sys.stderr)
    return cases


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs" if abs(seconds) < 0.1 else f"{seconds:,.2f} s"


def print_table(cases: list[Case]) -> None:
    print(
        f"\nTime our middleware adds (real Sidekiq 6.4.1, concurrency 1, {JOBS} no-op jobs and "
        f"{PUSHES} pushes with it, as many without, interleaved)\n"
    )
    print(
        "| supervisor | sender | job chain without / with (median) | added per job: median / "
        "mean / p99 | slowest job | added per push: median / mean / p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for case in cases:
        j, p = case.job, case.push
        print(
            f"| {case.supervisor} | {case.mode} | {_us(j.median_without)} / {_us(j.median_with)} "
            f"| {_us(j.median)} / {_us(j.mean)} / {_us(j.p99)} | {_us(j.max_with)} "
            f"| {_us(p.median)} / {_us(p.mean)} / {_us(p.p99)} |"
        )


def targets(cases: list[Case]) -> dict[str, bool]:
    """Background sender: under 1 ms added per job (median and mean) in every supervisor state."""
    return {
        f"background, supervisor {case.supervisor}: job +{_us(case.job.mean)} mean < 1 ms": (
            max(case.job.median, case.job.mean) < TARGET_SECONDS
        )
        for case in cases
        if case.mode == "background"
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as db:
        log_dir = Path(tmp)
        for state in STATES:
            for mode in MODES:
                (log_dir / f"{state}-{mode}").mkdir()
        with run_supervisor(db.url, log_dir) as live, hung_supervisor() as hung:
            urls = {"up": live.url, "refused": refused_url(), "hung": hung}
            cases = asyncio.run(measure_all(urls, log_dir))
    print_table(cases)
    met = targets(cases)
    print()
    for name, ok in met.items():
        print(f"{'PASS' if ok else 'MISS'} {name}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"cases": [asdict(case) for case in cases], "targets": met}
    (RESULTS / "middleware.json").write_text(json.dumps(report, indent=2))
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
