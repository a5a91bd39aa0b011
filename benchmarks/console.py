"""Console benchmark: a million jobs in a scratch MariaDB ledger, every JobManager method timed
(first page and second page, median of several runs) with no filter, with filters matching at
least 1% of the rows, and with filters matching nothing; each statement's EXPLAIN shown.

    make bench-console       # BENCH_ROWS (1,000,000), BENCH_RUNS (7), BENCH_MYSQL_URL,
                             # BENCH_STATEMENT_CAP_SECONDS (10: slower statements are stopped)

Targets: first page under 50 ms using an index (no filter, or a filter matching >= 1%); a filter
matching nothing within 2 s. The duration methods also read the newest DURATION_SAMPLE_SIZE
completions, so they are reported apart. Writes benchmarks/results/console.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import JobFilter
from app.manager import Durations, FilterArg, JobManager
from app.store.db import create_engine, create_sessionmaker
from benchmarks import fake_ledger
from benchmarks.throwaway import RESULTS, ROOT, Database, connect, query, scratch_database

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
SLOW_RUNS = 3  # a query slower than SLOW_MS is timed this many times, not RUNS
SLOW_MS = 300.0
TARGET_PAGE_MS = 50.0
TARGET_NO_MATCH_MS = 2000.0
NO_QUEUE = "no-such-queue"
# Each statement is stopped after this long (MariaDB max_statement_time), so a full scan of a
# slow disk cannot hold the benchmark for minutes: anything past it has missed the 2 s anyway.
CAP_SECONDS = float(os.environ.get("BENCH_STATEMENT_CAP_SECONDS", "10"))
STATEMENT_TIMEOUT = 1969  # MariaDB: "max_statement_time exceeded"

LISTINGS = ("queued_jobs", "uncompleted_jobs", "completed_jobs", "jobs")
DURATIONS = ("queued_to_completion_duration", "completed_jobs_duration", "durations")


@dataclass(frozen=True, slots=True)
class Case:
    """A filter to time every method with; `where` counts the rows it matches."""

    name: str
    flt: FilterArg
    matches_nothing: bool
    where: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """One row of EXPLAIN (plus ANALYZE's r_rows: the rows actually read)."""

    statement: str
    access: str
    key: str | None
    rows_estimate: int | None
    rows_read: float | None
    extra: str

    @property
    def indexed(self) -> bool:
        return self.key is not None and "filesort" not in self.extra.lower()


@dataclass(slots=True)
class Timing:
    """One method with one filter. `capped`: a statement ran past CAP_SECONDS and was stopped."""

    method: str
    case: str
    first_page_ms: float
    second_page_ms: float | None
    cold_ms: float
    runs: int = 0
    capped: bool = False
    plans: list[Plan] = field(default_factory=list)
    second_page_plan: Plan | None = None
    sample_query_ms: float | None = None


class Recorder:
    """The SQL statements (and parameters) the engine sends, captured for EXPLAIN."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        # Only queries have plans; the search time limit's SET SESSION has none.
        if statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, params))

    def take(self) -> list[tuple[str, Any]]:
        taken, self.statements = self.statements, []
        return taken


def cases() -> list[Case]:
    """No filter; arguments, queue and class filters matching >= 1%; two that match nothing."""
    shape = fake_ledger.make_shape()
    queue = min(shape.queue_share().items(), key=lambda kv: abs(kv[1] - 0.03))[0]
    job_class = min(shape.class_share.items(), key=lambda kv: abs(kv[1] - 0.015))[0]
    marker, nothing = fake_ledger.MARKER, fake_ledger.NO_MATCH
    match_class = JobFilter(job_class=job_class)
    return [
        Case("no filter", None, False, "1"),
        Case(f"args '{marker}'", marker, False, "arguments LIKE %s", (f"%{marker}%",)),
        Case(f"queue={queue}", JobFilter(queue=queue), False, "queue = %s", (queue,)),
        Case(f"class={job_class}", match_class, False, "job_class = %s", (job_class,)),
        Case("no match: args", nothing, True, "arguments LIKE %s", (f"%{nothing}%",)),
        Case("no match: queue", JobFilter(queue=NO_QUEUE), True, "queue = %s", (NO_QUEUE,)),
    ]


# Timing ------------------------------------------------------------------------------------


async def elapsed_ms(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    return statistics.median([(await elapsed_ms(call))[0] for _ in range(runs)])


def next_cursor(found: Any) -> str | None:
    if isinstance(found, Durations):
        return found.page.next_cursor
    cursor: str | None = found.next_cursor  # Page or DurationReport
    return cursor


async def explain(engine: AsyncEngine, statement: str, params: Any, *, analyze: bool) -> Plan:
    """EXPLAIN for the plan; ANALYZE (which runs the query again) for the rows actually read."""
    async with engine.connect() as conn:
        plan = (await conn.exec_driver_sql("EXPLAIN " + statement, params)).mappings().one()
        read = None
        if analyze:
            found = (await conn.exec_driver_sql("ANALYZE " + statement, params)).mappings().one()
            read = None if found["r_rows"] is None else float(found["r_rows"])
    return Plan(
        statement=statement,
        access=str(plan["type"]),
        key=plan["key"],
        rows_estimate=plan["rows"],
        rows_read=read,
        extra=str(plan["Extra"] or ""),
    )


async def sample_query_ms(engine: AsyncEngine, statement: str, params: Any, runs: int) -> float:
    """The duration sample's SQL alone (fetching every row, no Python percentiles)."""

    async def run() -> None:
        async with engine.connect() as conn:
            (await conn.exec_driver_sql(statement, params)).all()

    return await median_ms(run, runs)


def cap_statements(engine: AsyncEngine, seconds: float) -> None:
    """Every statement on this engine's connections stops after `seconds` (MariaDB only)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION max_statement_time = {seconds:g}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)


def was_capped(exc: DBAPIError) -> bool:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return bool(args) and args[0] == STATEMENT_TIMEOUT


async def measure(manager: JobManager, engine: AsyncEngine, recorder: Recorder,
                  method: str, case: Case) -> Timing:  # fmt: skip
    call = getattr(manager, method)
    recorder.take()
    try:
        cold, found = await elapsed_ms(lambda: call(case.flt))
    except DBAPIError as exc:
        if not was_capped(exc):
            raise
        return await capped(engine, recorder, method, case)
    statements = recorder.take()
    runs = SLOW_RUNS if cold > SLOW_MS else RUNS
    timing = Timing(method, case.name, await median_ms(lambda: call(case.flt), runs), None, cold)
    timing.runs = runs
    analyze = cold < TARGET_NO_MATCH_MS
    timing.plans = [await explain(engine, *statement, analyze=analyze) for statement in statements]
    cursor = next_cursor(found)
    if cursor is not None:
        recorder.take()
        timing.second_page_ms = await median_ms(lambda: call(case.flt, cursor=cursor), runs)
        timing.second_page_plan = await explain(engine, *recorder.take()[0], analyze=analyze)
    if method in DURATIONS and len(statements) > 1:
        timing.sample_query_ms = await sample_query_ms(engine, *statements[-1], runs)
    return timing


async def capped(engine: AsyncEngine, recorder: Recorder, method: str, case: Case) -> Timing:
    """A method whose statement hit the cap: its time is "over the cap", its plan EXPLAINed."""
    statements = recorder.take()
    cap_ms = CAP_SECONDS * 1000
    timing = Timing(method, case.name, cap_ms, None, cap_ms, runs=0, capped=True)
    timing.plans = [await explain(engine, *statement, analyze=False) for statement in statements]
    return timing


# Report ------------------------------------------------------------------------------------


def verdict(timing: Timing, case: Case) -> bool:
    if timing.capped:
        return False
    if case.matches_nothing:
        return timing.first_page_ms < TARGET_NO_MATCH_MS
    return timing.first_page_ms < TARGET_PAGE_MS and all(p.indexed for p in timing.plans)


def print_header() -> None:
    print(f"\n{'method':31} {'filter':24} {'page1 ms':>9} {'page2 ms':>9} {'runs':>4}  "
          f"     index used (rows read), per statement")  # fmt: skip
    print("(page ms: median; runs: how many; a '>' time was stopped at the statement cap)")


def _plan_label(plan: Plan) -> str:
    read = "?" if plan.rows_read is None else f"{plan.rows_read:.0f}"
    sorted_ = " +filesort" if "filesort" in plan.extra.lower() else ""
    return f"{plan.key or 'NO INDEX: ' + plan.access}{sorted_} ({read})"


def print_timing(t: Timing, case: Case) -> None:
    first = f">{t.first_page_ms:.0f}" if t.capped else f"{t.first_page_ms:.1f}"
    second = "-" if t.second_page_ms is None else f"{t.second_page_ms:.1f}"
    plans = ", ".join(_plan_label(p) for p in t.plans)
    if t.second_page_plan is not None and t.second_page_plan.key != t.plans[0].key:
        plans += f"; page 2: {_plan_label(t.second_page_plan)}"
    if t.sample_query_ms is not None:
        plans += f"; sample SQL alone {t.sample_query_ms:.1f} ms"
    mark = "PASS" if verdict(t, case) else "MISS"
    print(f"{t.method:31} {t.case:24} {first:>9} {second:>9} {t.runs:4}  {mark} {plans}")


def print_plans(timings: list[Timing]) -> None:
    """EXPLAIN of each distinct statement, once (the no-filter case of each method)."""
    print("\nEXPLAIN (no filter), per statement:")
    for t in timings:
        if t.case != "no filter":
            continue
        for p in t.plans:
            sql = " ".join(p.statement.split())
            sql = "SELECT ..." + sql[sql.index(" FROM ") :]
            print(f"  {t.method}: type={p.access} key={p.key} rows~{p.rows_estimate} "
                  f"read={p.rows_read} extra={p.extra!r}\n    {sql}")  # fmt: skip


def summarize(timings: list[Timing], all_cases: list[Case]) -> dict[str, bool]:
    by_case = {case.name: case for case in all_cases}
    listing = [t for t in timings if t.method in LISTINGS]
    report = [t for t in timings if t.method in DURATIONS]
    result = {
        "listings: page 1 < 50 ms via an index (no filter / >= 1%)": all(
            verdict(t, by_case[t.case]) for t in listing if not by_case[t.case].matches_nothing
        ),
        "listings: no match < 2 s": all(
            verdict(t, by_case[t.case]) for t in listing if by_case[t.case].matches_nothing
        ),
        "duration methods: page 1 < 50 ms (no filter / >= 1%)": all(
            verdict(t, by_case[t.case]) for t in report if not by_case[t.case].matches_nothing
        ),
        "duration methods: no match < 2 s": all(
            verdict(t, by_case[t.case]) for t in report if by_case[t.case].matches_nothing
        ),
    }
    print()
    for label, ok in result.items():
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    return result


# Main --------------------------------------------------------------------------------------


async def shares(db: Database, all_cases: list[Case]) -> dict[str, float]:
    """The fraction of all rows each case's filter matches."""
    found: dict[str, float] = {}
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        for case in all_cases:
            await cursor.execute(f"SELECT COUNT(*) FROM jobs WHERE {case.where}", case.params)
            found[case.name] = (await cursor.fetchone())[0] / ROWS
    return found


async def sizes(db: Database) -> dict[str, float]:
    """The table's size on disk against the InnoDB buffer pool that caches it (MiB)."""
    rows = await query(
        db,
        "SELECT data_length, index_length, @@innodb_buffer_pool_size FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = 'jobs'",
    )
    mib = [float(value) / 2**20 for value in rows[0]]
    return {"data_mib": mib[0], "index_mib": mib[1], "buffer_pool_mib": mib[2]}


async def bench(db: Database) -> dict[str, Any]:
    async with connect(db.server, db.name) as conn:
        load_seconds = await fake_ledger.load(conn, ROWS, datetime.now(UTC))
    size = await sizes(db)
    print(f"loaded {ROWS:,} jobs in {load_seconds:.1f}s; table {size['data_mib']:.0f} MiB + "
          f"indexes {size['index_mib']:.0f} MiB, InnoDB buffer pool "
          f"{size['buffer_pool_mib']:.0f} MiB")  # fmt: skip
    all_cases = cases()
    matched = await shares(db, all_cases)
    for name, share in matched.items():
        print(f"  {name:24} matches {share:7.2%} of the rows")
    settings = Settings(DATABASE_URL=db.url)
    # As app/cli/jobs.py's open_manager builds it.
    engine = create_engine(settings, name="sidekiq-supervisor-bench")
    try:
        manager = JobManager(
            create_sessionmaker(engine), sample_limit=settings.DURATION_SAMPLE_SIZE
        )
        cap_statements(engine, CAP_SECONDS)
        recorder = Recorder(engine)
        print_header()
        timings = []
        for method in (*LISTINGS, *DURATIONS):
            for case in all_cases:
                timings.append(await measure(manager, engine, recorder, method, case))
                print_timing(timings[-1], case)
    finally:
        await engine.dispose()
    print_plans(timings)
    targets = summarize(timings, all_cases)
    return {
        "rows": ROWS,
        "load_seconds": load_seconds,
        "sizes": size,
        "page_size": manager.page_size,
        "sample_limit": manager.sample_limit,
        "shares": matched,
        "timings": [asdict(t) for t in timings],
        "targets": targets,
    }


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"console: {ROWS:,} rows, median of {RUNS} runs, load {os.getloadavg()[0]:.2f}")
    try:
        with scratch_database() as db:
            result = asyncio.run(bench(db))
    except RuntimeError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    (RESULTS / "console.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'console.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
