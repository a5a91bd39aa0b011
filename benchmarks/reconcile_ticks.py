"""A scenario's ticks: the reconciler's store and Redis calls timed from outside (patched where
app.sampler.reconcile looks them up), each SELECT they sent EXPLAINed and ANALYZEd once the tick
is over, and the report printed from them (phases, rounds, plans).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import app.sampler.reconcile as under_test
from app.domain import Snapshot
from app.sampler.reconcile import ReconcileConfig, Reconciler, Verdicts
from app.store.overdue import StartedPage
from benchmarks.console import Plan, Recorder

# Which function each phase's time is spent in.
PHASE_OF = {
    "started_runs": "open",
    "queued_runs": "open",
    "scan_step": "scan",
    "current_runs": "close",
    "write_batch": "close",
    "stuck_counts": "gauges",
    "lost_counts": "gauges",
}
PHASES = ("open", "scan", "close", "gauges")
GAUGES = ("stuck_counts", "lost_counts")
# Index condition pushdown rejects index entries inside the engine: r_rows never sees them.
SHOW_ICP = (
    "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_icp_attempts', 'Handler_icp_match')"
)


@dataclass(slots=True)
class Call:
    """One store or Redis call the reconciler made. `returned`: rows, entries, events, or the
    rows a GROUP BY counted; `rows_read` and `examined`: summed over its statements."""

    function: str
    seconds: float
    returned: int
    statements: list[tuple[str, Any]] = field(default_factory=list)
    rows_read: float = 0.0
    examined: int = 0


@dataclass(slots=True)
class Tick:
    seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)
    verdicts: Verdicts | None = None

    def phase(self, name: str) -> list[Call]:
        return [c for c in self.calls if PHASE_OF[c.function] == name]

    def phase_seconds(self, name: str) -> float:
        if name == "other":  # Python: the running set, building the round, events, metrics
            return self.seconds - sum(c.seconds for c in self.calls)
        return sum(c.seconds for c in self.phase(name))


def returned(name: str, args: tuple[Any, ...], result: Any) -> int:
    if name == "scan_step":
        return len(result[1])
    if name == "write_batch":
        return len(args[1])
    if isinstance(result, StartedPage):
        return len(result.runs)
    if isinstance(result, dict):
        return sum(result.values()) if name in GAUGES else len(result)
    return len(result)


class Probe:
    """Wraps the functions reconcile.py calls, timing them and taking the SQL they sent."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.tick = Tick()

    def wrap(self, name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.recorder.take()
            started = time.perf_counter()
            result = await function(*args, **kwargs)
            seconds = time.perf_counter() - started
            call = Call(name, seconds, returned(name, args, result), self.recorder.take())
            self.tick.calls.append(call)
            return result

        return timed

    def install(self, stack: ExitStack) -> None:
        for name in PHASE_OF:
            original = getattr(under_test, name)
            stack.enter_context(mock.patch.object(under_test, name, self.wrap(name, original)))


async def icp_rejects(conn: AsyncConnection) -> int:
    rows: Sequence[Any] = (await conn.exec_driver_sql(SHOW_ICP)).all()  # (name, value)
    counts = {str(row[0]): int(row[1]) for row in rows}
    return counts["Handler_icp_attempts"] - counts["Handler_icp_match"]


async def examine(engine: AsyncEngine, statement: str, params: Any) -> tuple[Plan, int]:
    """EXPLAIN, then ANALYZE (which runs the query): the plan with r_rows, and the index entries
    or rows examined: r_rows plus the entries index condition pushdown rejected on the way."""
    async with engine.connect() as conn:
        plan = (await conn.exec_driver_sql("EXPLAIN " + statement, params)).mappings().one()
        before = await icp_rejects(conn)
        found = (await conn.exec_driver_sql("ANALYZE " + statement, params)).mappings().one()
        rejected = await icp_rejects(conn) - before
    read = None if found["r_rows"] is None else float(found["r_rows"])
    return Plan(
        statement=statement,
        access=str(plan["type"]),
        key=plan["key"],
        rows_estimate=plan["rows"],
        rows_read=read,
        extra=str(plan["Extra"] or ""),
    ), round(read or 0) + rejected


async def run_ticks(
    ticks: int, reconciler: Reconciler, snapshot: Snapshot, probe: Probe, engine: AsyncEngine
) -> tuple[list[Tick], dict[str, tuple[Plan, int]]]:
    """`ticks` ticks on one snapshot; after each (untimed) its statements are examined, a
    gauge's only when it counted a number of rows not seen yet (it reads the same again).
    Returns the ticks and, per function, the plan of its call that examined the most."""
    done: list[Tick] = []
    plans: dict[str, tuple[Plan, int]] = {}
    seen: dict[tuple[str, int], Call] = {}
    for _ in range(ticks):
        probe.tick = Tick()
        started = time.perf_counter()
        probe.tick.verdicts = await reconciler.tick(snapshot)
        probe.tick.seconds = time.perf_counter() - started
        done.append(probe.tick)
        for call in probe.tick.calls:
            known = seen.get((call.function, call.returned))
            if call.function in GAUGES and known is not None:
                call.rows_read, call.examined = known.rows_read, known.examined
                continue
            seen[call.function, call.returned] = call
            await examine_call(engine, call, plans)
    return done, plans


async def examine_call(engine: AsyncEngine, call: Call, plans: dict[str, tuple[Plan, int]]) -> None:
    """Sum what the call's statements read into it; keep a plan if it examined the most."""
    for sql, params in call.statements:
        plan, examined = await examine(engine, sql, params)
        call.rows_read += plan.rows_read or 0.0
        call.examined += examined
        if call.function not in plans or examined > plans[call.function][1]:
            plans[call.function] = (plan, examined)


# Report ----------------------------------------------------------------------------------------

# Phases whose statements' reads are printed (scan talks to Redis only).
READS_SQL = ("open", "close", "gauges")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def spread(values: Sequence[float]) -> str:
    return "-" if not values else f"{statistics.median(values):,.0f} / {max(values):,.0f}"


def phase_figures(name: str, ticks: list[Tick]) -> dict[str, Any]:
    """A phase's time in each tick it ran in, what its calls returned, what they read."""
    ran = ticks if name == "other" else [t for t in ticks if t.phase(name)]
    return {
        "ticks": len(ran),
        "seconds": [t.phase_seconds(name) for t in ran],
        "returned": [sum(c.returned for c in t.phase(name)) for t in ran],
        "rows_read": [sum(c.rows_read for c in t.phase(name)) for t in ran],
        "examined": [sum(c.examined for c in t.phase(name)) for t in ran],
    }


def split(tick: Tick) -> str:
    return ", ".join(f"{name} {ms(tick.phase_seconds(name))}" for name in (*PHASES, "other"))


def print_phases(ticks: list[Tick]) -> dict[str, Any]:
    later = ticks[1:]
    slowest = max(range(len(later)), key=lambda n: later[n].seconds)
    print(f"  first tick {ms(ticks[0].seconds)} ms ({split(ticks[0])})")
    print(f"  ticks 2-{len(ticks)}: median {ms(statistics.median(t.seconds for t in later))} ms, "
          f"max {ms(later[slowest].seconds)} ms at tick {slowest + 2} "
          f"({split(later[slowest])})")  # fmt: skip
    print(f"  {'phase':7} {'ticks':>5} {'ms median':>9} {'ms max':>8}   per tick (median / max): "
          f"{'returned':>15} {'r_rows':>15} {'examined':>15}")  # fmt: skip
    phases = {name: phase_figures(name, ticks) for name in (*PHASES, "other")}
    for name, f in phases.items():
        cells = [f"  {name:7} {f['ticks']:>5}"]
        if f["ticks"]:
            cells += [f"{ms(statistics.median(f['seconds'])):>9}", f"{ms(max(f['seconds'])):>8}"]
            counts = [] if name == "other" else [f["returned"]]
            counts += [f["rows_read"], f["examined"]] if name in READS_SQL else []
            cells += [" " * 27] + [f"{spread(values):>15}" for values in counts]
        print(" ".join(cells))
    return phases


def print_rounds(
    ticks: list[Tick], config: ReconcileConfig, interval: float, backlog: int
) -> dict[str, Any]:
    """When rounds opened and closed (a round may close in parts: its started runs first), what
    they decided, and the pace that gives for a backlog of `backlog` candidates."""
    opened = [n for n, t in enumerate(ticks, 1) if t.phase("open") and t.phase("scan")]
    closed = [n for n, t in enumerate(ticks, 1) if t.verdicts is not None]
    empty = sum(1 for t in ticks if t.phase("open") and not t.phase("scan"))
    decided = Counter[str]()
    for verdicts in (t.verdicts for t in ticks if t.verdicts is not None):
        for kind in ("failed", "dead", "scheduled", "lost"):
            decided[kind] += len(getattr(verdicts, kind))
    print(f"  rounds opened at ticks {opened}, decided at {closed}; {empty} opens found no "
          f"candidate; decided {dict(decided)}")  # fmt: skip
    # A round is over when the next open comes: the longest finished one bounds the pace.
    opens = [n for n, t in enumerate(ticks, 1) if t.phase("open")]
    lengths = [after - n for n, after in itertools.pairwise(opens) if n in opened]
    if lengths:
        length = max(lengths)
        ticks_needed = backlog // config.batch * length
        print(f"  a backlog of {backlog:,} candidates at {config.batch:,} a round of "
              f"{length} ticks: {ticks_needed:,} ticks = "
              f"{ticks_needed * interval / 3600:.1f} h at {interval:g} s a tick")  # fmt: skip
    return {"opened": opened, "closed": closed, "empty_opens": empty, "decided": dict(decided)}


def plan_line(label: str, plan: Plan, examined: int) -> str:
    read = plan.rows_read or 0.0
    return (f"{label}type={plan.access} key={plan.key} rows~{plan.rows_estimate} "
            f"r_rows={read:.0f} examined={examined:,} extra={plan.extra!r}")  # fmt: skip


def print_plans(plans: dict[str, tuple[Plan, int]]) -> None:
    print("  EXPLAIN / ANALYZE, per function (its call that examined the most):")
    for name, (plan, examined) in plans.items():
        sql = " ".join(plan.statement.split())
        where = sql[sql.index(" WHERE ") :] if " WHERE " in sql else sql
        print(f"{plan_line(f'    {name}: ', plan, examined)}\n      ...{where[:160]}")
