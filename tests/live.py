"""Supervisors over loopback TCP, for the middleware and crash tests: the real service
(`python -m app serve` on a free port against the test database), one that refuses
connections, and one that accepts connections and never answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[1]
START_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.05
STOP_SECONDS = 10.0
HUNG_BACKLOG = 64

NO_HEALTH = "the supervisor answered no /healthz within {seconds:g} s; log tail:\n{log}"
EXITED = "the supervisor exited ({code}); log tail:\n{log}"


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


@dataclass(frozen=True, slots=True)
class LiveSupervisor:
    """A running service: ingest on `url`, read API and metrics with `admin_token`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    ingest_token: str | None
    admin_token: str | None

    def client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=5.0)

    async def job(self, jid: str) -> dict[str, Any] | None:
        """GET /api/v1/jobs/{jid}: the ledger row with its timeline, None while unknown."""
        self.check_alive()
        async with self.client() as http:
            response = await http.get(f"/api/v1/jobs/{jid}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def samples(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample called `name` on /prometheus/metrics, keyed by its label set."""
        async with self.client() as http:
            response = await http.get("/prometheus/metrics")
        response.raise_for_status()
        return {
            frozenset(sample.labels.items()): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == name
        }

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(EXITED.format(code=code, log=log_tail(self.log)))


@contextmanager
def run_supervisor(
    database_url: str,
    log_dir: Path,
    *,
    ingest_token: str | None = None,
    admin_token: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[LiveSupervisor]:
    """`python -m app serve` on a free loopback port; killed and reaped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "SUPERVISOR_DATABASE_URL": database_url,
        "SUPERVISOR_REDIS_URL": REDIS_URL,
        "SUPERVISOR_SAMPLER_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
        **({"SUPERVISOR_INGEST_TOKEN": ingest_token} if ingest_token else {}),
        **({"SUPERVISOR_ADMIN_TOKEN": admin_token} if admin_token else {}),
        **(extra_env or {}),
    }
    log = log_dir / "supervisor.log"
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    live = LiveSupervisor(f"http://127.0.0.1:{port}", process, log, ingest_token, admin_token)
    try:
        if not answers(live.url + "/healthz", live.check_alive, START_DEADLINE_SECONDS):
            pytest.fail(NO_HEALTH.format(seconds=START_DEADLINE_SECONDS, log=log_tail(log)))
        yield live
    finally:
        stop(process)


def answers(url: str, check_alive: Callable[[], None], seconds: float) -> bool:
    """Whether `url` answers 200 within `seconds`; `check_alive` fails the test early when the
    server behind it has exited."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            check_alive()
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(POLL_SECONDS)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill if it will not go; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def refused_url() -> str:
    """A supervisor that is down: nothing listens on the port, connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def hung_supervisor() -> Iterator[str]:
    """A supervisor that accepts every connection and never answers (nor reads); its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(HUNG_BACKLOG)
    listener.settimeout(POLL_SECONDS)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept_forever, name="hung-supervisor", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
