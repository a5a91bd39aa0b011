"""Debian's Prometheus and Alertmanager for the tests: their tools (promtool, amtool), found or
failed with how to install them, and their servers run as child processes on loopback ports."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import answers, free_port, log_tail, stop

PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}
MISSING = (
    "`{name}` is not installed: run `make system-deps` "
    "(or `apt-get install {package}`, Debian's package)"
)
NOT_READY = "{name} was not ready within {seconds:g} s ({url}); log tail:\n{log}"
EXITED = "{name} exited ({code}); log tail:\n{log}"
READY_SECONDS = 20.0


def tool(name: str) -> str:
    """The path of a Prometheus or Alertmanager executable; fails the test when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(MISSING.format(name=name, package=PACKAGES[name]))
    return found


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool or amtool to completion; stdout and stderr as text."""
    return subprocess.run(
        [tool(name), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@dataclass(frozen=True, slots=True)
class Server:
    """A running Prometheus or Alertmanager: its base URL, its host:port and its log."""

    name: str
    url: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(EXITED.format(name=self.name, code=code, log=log_tail(self.log)))

    def tail(self) -> str:
        return f"--- {self.name} log tail ---\n{log_tail(self.log)}"


@contextmanager
def run_prometheus(config: Path, data: Path, log_dir: Path) -> Iterator[Server]:
    """Prometheus with `config`, its TSDB under `data`, listening on a free loopback port."""
    address = f"127.0.0.1:{free_port()}"
    command = [
        tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={address}",
    ]
    with _serve("prometheus", command, address, log_dir) as server:
        yield server


@contextmanager
def run_alertmanager(config: Path, data: Path, log_dir: Path) -> Iterator[Server]:
    """Alertmanager with `config` alone: no cluster gossip (empty cluster address)."""
    address = f"127.0.0.1:{free_port()}"
    command = [
        tool("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address={address}",
        "--cluster.listen-address=",
    ]
    with _serve("alertmanager", command, address, log_dir) as server:
        yield server


@contextmanager
def _serve(name: str, command: Sequence[str], address: str, log_dir: Path) -> Iterator[Server]:
    """Start `command`, wait for its /-/ready, and always terminate (then kill) and reap it."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, f"http://{address}", address, process, log)
    try:
        if not answers(server.url + "/-/ready", server.check_alive, READY_SECONDS):
            tail = log_tail(server.log)
            url = server.url
            pytest.fail(NOT_READY.format(name=name, seconds=READY_SECONDS, url=url, log=tail))
        yield server
    finally:
        stop(process)
