"""Real Sidekiq (Debian's ruby-sidekiq 6.4.1) for tests: one `sidekiq` process on a Redis database
of its own, jobs pushed through Sidekiq::Client, Sidekiq's own API read by a Ruby script, jobs
held busy until released, and a stop (TERM, then KILL) that always reaps the process group.

    async with start_sidekiq(tmp_path) as sidekiq:
        [jid] = await sidekiq.hold(default=1)        # running, and stays so until released
        await sidekiq.push(job("QuickJob", "low"))
        await sidekiq.wait_for_heartbeat(lambda beat: beat.busy == 1)
        view = await sidekiq.inspect()               # Sidekiq::Stats, Queue, ProcessSet, Workers
        await sidekiq.release(jid)

The Ruby side is tests/sidekiq/real/: app.rb (the jobs), enqueue.rb and inspect.rb. Runs on the
same machine hold a file lock, so two test sessions never share the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

REDIS_URL = os.environ.get("SUPERVISOR_TEST_SIDEKIQ_REDIS_URL", "redis://127.0.0.1:6379/14")
ROOT = Path(__file__).resolve().parents[2]
REAL = Path(__file__).resolve().parent / "real"
APP, ENQUEUE, INSPECT = REAL / "app.rb", REAL / "enqueue.rb", REAL / "inspect.rb"

QUEUES = ("critical,2", "default", "low")  # `-q` arguments: name[,weight]
CONCURRENCY = 5
TAG = "supervisor-test"
SHUTDOWN_TIMEOUT_SECONDS = 1  # Sidekiq's -t: how long TERM waits for running jobs
HEARTBEAT_SECONDS = 5.0  # Sidekiq 6.x BEAT_PAUSE: stats and busy change only this often
HOLD_SECONDS = 30  # a HoldJob nobody releases ends by itself after this
POLL_SECONDS = 0.05
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
RUBY_TIMEOUT_SECONDS = 30.0
LOCK_TIMEOUT_SECONDS = 300.0
WAIT_TIMEOUT_SECONDS = 3 * HEARTBEAT_SECONDS

# Keys the jobs of app.rb write (not Sidekiq's). Jobs: HoldJob (busy until released), QuickJob
# (succeeds), ExplodeJob (raises; retry an hour away), FlakyJob (fails once, then succeeds).
STARTED = "supervisor-test:started"
DONE = "supervisor-test:done"
RELEASE = "supervisor-test:release:"

NOT_INSTALLED = (
    "real-Sidekiq tests need the `sidekiq` command and `ruby`: install Debian's ruby-sidekiq "
    "(apt-get install ruby-sidekiq ruby-faraday; .ci/run installs them on CI)"
)
DID_NOT_START = "sidekiq (pid {pid}) wrote no heartbeat within {seconds} s; log tail:\n{log}"
TIMED_OUT = "timed out after {seconds} s waiting for {what}; sidekiq log tail:\n{log}"
EXITED = "sidekiq exited ({code}) while waiting for {what}; log tail:\n{log}"
RUBY_FAILED = "ruby {script} exited {code}:\n{stderr}"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The fields of the process hash, as of the newest beat."""

    busy: int
    quiet: str
    beat: float
    processed: int  # stat:processed, written in the same heartbeat
    failed: int
    working: int  # entries in <identity>:workers (6.4.1's busy-work hash)


@dataclass(frozen=True, slots=True)
class RubyStats:
    processed: int
    failed: int
    scheduled_size: int
    retry_size: int
    dead_size: int
    processes_size: int
    enqueued: int
    workers_size: int
    default_queue_latency: float


@dataclass(frozen=True, slots=True)
class RubyQueue:
    name: str
    size: int
    latency: float


@dataclass(frozen=True, slots=True)
class RubyProcess:
    identity: str
    hostname: str
    pid: int
    tag: str
    concurrency: int
    busy: int
    quiet: str
    queues: tuple[str, ...]
    labels: tuple[str, ...]
    started_at: float
    beat: float
    rss: int


@dataclass(frozen=True, slots=True)
class RubyWork:
    process: str
    tid: str
    jid: str
    job_class: str
    queue: str
    run_at: int


@dataclass(frozen=True, slots=True)
class RubyView:
    """What Sidekiq's Ruby API reported; every value was read between `before` and `after`."""

    stats: RubyStats
    queues: tuple[RubyQueue, ...]
    processes: tuple[RubyProcess, ...]
    workers: tuple[RubyWork, ...]
    before: float
    after: float

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> RubyView:
        return cls(
            stats=RubyStats(**raw["stats"]),
            queues=tuple(RubyQueue(**queue) for queue in raw["queues"]),
            processes=tuple(
                RubyProcess(**{**p, "queues": tuple(p["queues"]), "labels": tuple(p["labels"])})
                for p in raw["processes"]
            ),
            workers=tuple(
                RubyWork(**{k: v for k, v in w.items() if k != "class"}, job_class=w["class"])
                for w in raw["workers"]
            ),
            before=raw["before"],
            after=raw["after"],
        )


def job(job_class: str, queue: str, *args: Any, **options: Any) -> dict[str, Any]:
    """One Sidekiq::Client.push item; options such as retry=0 or at=<epoch seconds> pass through."""
    return {"class": job_class, "queue": queue, "args": list(args), **options}


@dataclass
class RealSidekiq:
    """A running `sidekiq` process and a client on its Redis database."""

    process: asyncio.subprocess.Process
    redis: Redis
    identity: str
    log: Path
    env: dict[str, str]
    command: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def kill9(self) -> None:
        """SIGKILL the process group, as a pod killed mid-job: nothing is cleaned up in Redis."""
        _signal_group(self.pid, signal.SIGKILL)
        await self.process.wait()

    async def push(self, *items: Mapping[str, Any]) -> list[str]:
        """Pushes through Sidekiq::Client (one Ruby run for all items); returns the jids."""
        jids: list[str] = orjson.loads(await run_ruby(ENQUEUE, self.env, orjson.dumps(items)))
        return jids

    async def inspect(self) -> RubyView:
        """Sidekiq::Stats, Queue.all, ProcessSet and Workers, as inspect.rb prints them."""
        return RubyView.parse(orjson.loads(await run_ruby(INSPECT, self.env)))

    async def hold(self, **per_queue: int) -> list[str]:
        """Pushes HoldJobs (hold(default=2, low=1)) and waits until every one is running."""
        items = [
            job("HoldJob", queue, HOLD_SECONDS) for queue, n in per_queue.items() for _ in range(n)
        ]
        jids = await self.push(*items)
        await self.wait_until(lambda: self._all_in(STARTED, jids), f"held jobs {jids} to start")
        return jids

    async def release(self, *jids: str) -> None:
        """Lets held jobs finish (each LPUSH wakes the HoldJob's BLPOP)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for jid in jids:
                pipe.lpush(RELEASE + jid, "go")
            await pipe.execute()

    async def done(self) -> set[str]:
        """The jids of the QuickJobs (and FlakyJobs) that have run to completion."""
        return {_text(jid) for jid in await self.redis.lrange(DONE, 0, -1)}

    async def wait_done(self, *jids: str) -> None:
        async def finished() -> bool:
            return (await self.done()).issuperset(jids)

        await self.wait_until(finished, f"jobs {list(jids)} to complete")

    async def jids_in(self, sorted_set: str) -> set[str]:
        """The jids in `retry`, `dead` or `schedule`."""
        members = await self.redis.zrange(sorted_set, 0, -1)
        return {orjson.loads(member)["jid"] for member in members if isinstance(member, bytes)}

    async def heartbeat(self) -> Heartbeat:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.identity, ["busy", "quiet", "beat"])
            pipe.mget(["stat:processed", "stat:failed"])
            pipe.hlen(f"{self.identity}:workers")
            (busy, quiet, beat), (processed, failed), working = await pipe.execute()
        return Heartbeat(
            busy=int(busy or 0),
            quiet=(quiet or b"").decode(),
            beat=float(beat or 0),
            processed=int(processed or 0),
            failed=int(failed or 0),
            working=int(working),
        )

    async def wait_for_heartbeat(
        self, check: Callable[[Heartbeat], bool], what: str = "a heartbeat"
    ) -> Heartbeat:
        """Polls until a heartbeat passes `check`; stats and busy change only every 5 s."""
        found: list[Heartbeat] = []

        async def passes() -> bool:
            beat = await self.heartbeat()
            found[:] = [beat]
            return check(beat)

        await self.wait_until(passes, what)
        return found[0]

    async def wait_until(
        self,
        condition: Callable[[], Awaitable[bool]],
        what: str,
        timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
    ) -> None:
        """Polls `condition` every 50 ms; fails the test with the sidekiq log on timeout."""
        deadline = time.monotonic() + timeout_seconds
        while not await condition():
            if self.process.returncode is not None:
                pytest.fail(
                    EXITED.format(code=self.process.returncode, what=what, log=tail(self.log))
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    TIMED_OUT.format(seconds=timeout_seconds, what=what, log=tail(self.log))
                )
            await asyncio.sleep(POLL_SECONDS)

    def quiet(self) -> None:
        """TSTP: finish the running jobs, fetch no more (shows at the next heartbeat)."""
        os.kill(self.pid, signal.SIGTSTP)

    async def _all_in(self, key: str, jids: Sequence[str]) -> bool:
        members = {_text(member) for member in await self.redis.lrange(key, 0, -1)}
        return members.issuperset(jids)


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def run_ruby(script: Path, env: Mapping[str, str], stdin: bytes = b"") -> bytes:
    """Runs one of the Ruby scripts; returns its stdout, raises with its stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        "ruby",
        str(script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), RUBY_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            RUBY_FAILED.format(script=script.name, code=process.returncode, stderr=err.decode())
        )
    return out


@asynccontextmanager
async def exclusive(redis_url: str) -> AsyncIterator[None]:
    """A machine-wide lock per Redis URL: concurrent test sessions take turns, never share."""
    digest = hashlib.sha256(redis_url.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"sidekiq-supervisor-real-sidekiq-{digest}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held {path} for {LOCK_TIMEOUT_SECONDS} s")
                await asyncio.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


@asynccontextmanager
async def start_sidekiq(
    log_dir: Path,
    *,
    queues: Sequence[str] = QUEUES,
    concurrency: int = CONCURRENCY,
    extra_env: Mapping[str, str] | None = None,
    redis_url: str = REDIS_URL,
) -> AsyncIterator[RealSidekiq]:
    """Flushes the database, starts sidekiq, yields once its first heartbeat is in Redis; on
    exit stops it (TERM, then KILL after 10 s), reaps it and flushes the database again.

    extra_env reaches sidekiq and the Ruby scripts, e.g. SIDEKIQ_TEST_REQUIRE=<middleware.rb>.
    """
    if shutil.which("sidekiq") is None or shutil.which("ruby") is None:
        pytest.fail(NOT_INSTALLED)
    env = {**os.environ, "REDIS_URL": redis_url, **(extra_env or {})}
    command = ["sidekiq", "-r", str(APP), "-c", str(concurrency), "-g", TAG]
    command += ["-t", str(SHUTDOWN_TIMEOUT_SECONDS)]
    for queue in queues:
        command += ["-q", queue]
    async with exclusive(redis_url):
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        try:
            async with _running(command, env, redis, log_dir / "sidekiq.log") as sidekiq:
                yield sidekiq
        finally:
            await redis.flushdb()
            await redis.aclose()


@asynccontextmanager
async def successor(previous: RealSidekiq, log_dir: Path) -> AsyncIterator[RealSidekiq]:
    """Another sidekiq like `previous` (same command, Redis and lock), e.g. after a kill -9,
    started without flushing the database; stopped and reaped on exit."""
    async with _running(
        previous.command, previous.env, previous.redis, log_dir / "next.log"
    ) as new:
        yield new


@asynccontextmanager
async def _running(
    command: Sequence[str], env: dict[str, str], redis: Redis, log: Path
) -> AsyncIterator[RealSidekiq]:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=sink, stderr=sink, env=env, cwd=ROOT, start_new_session=True
        )
    try:
        identity = await _first_heartbeat(redis, process, log)
        yield RealSidekiq(process, redis, identity, log, env, tuple(command))
    finally:
        await _stop(process)


async def _first_heartbeat(redis: Redis, process: asyncio.subprocess.Process, log: Path) -> str:
    """The identity ("<hostname>:<pid>:<nonce>") once its hash holds `info`."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.returncode is None:
        for member in await redis.smembers("processes"):
            identity = _text(member)
            if identity.split(":")[1:2] == [str(process.pid)] and await redis.hexists(
                identity, "info"
            ):
                return identity
        await asyncio.sleep(POLL_SECONDS)
    message = DID_NOT_START.format(pid=process.pid, seconds=START_TIMEOUT_SECONDS, log=tail(log))
    pytest.fail(message)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """TERM the process group; KILL it if Sidekiq has not exited in time; always reap."""
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # already gone
