"""Every third-party package the code imports is declared in pyproject.toml: what app/ and
migrations/ import among the runtime dependencies, what tests/ and benchmarks/ import there or
in the dev group. A package that only arrives as another one's dependency can leave with its
next release."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OWN = frozenset({"app", "tests", "benchmarks", "migrations"})
RUNTIME = ("app", "migrations")
DEVELOPMENT = ("tests", "benchmarks")


def imported(folders: Iterable[str]) -> set[str]:
    """The top-level names of every absolute import in the folders' Python files."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.partition(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.partition(".")[0])
    return found


def third_party(modules: set[str]) -> set[str]:
    return {name for name in modules if name not in sys.stdlib_module_names and name not in OWN}


def declared(*groups: str) -> set[str]:
    """Distribution names (canonical) of the runtime dependencies, plus the named groups'."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = list(project["project"]["dependencies"])
    for group in groups:
        lines += project["dependency-groups"][group]
    return {canonicalize_name(Requirement(line).name) for line in lines}


def undeclared(modules: set[str], allowed: set[str]) -> dict[str, list[str]]:
    """Each module whose installed distribution is not in `allowed`, with its distributions."""
    owners = packages_distributions()
    missing = {}
    for module in sorted(third_party(modules)):
        names: set[str] = {canonicalize_name(name) for name in owners.get(module, [])}
        if not names & allowed:
            missing[module] = sorted(names) or ["(not installed)"]
    return missing


@pytest.mark.parametrize(
    ("folders", "groups"), [(RUNTIME, ()), (DEVELOPMENT, ("dev",))], ids=["runtime", "dev"]
)
def test_every_imported_package_is_declared(folders: tuple[str, ...], groups: tuple[str]) -> None:
    assert undeclared(imported(folders), declared(*groups)) == {}


def test_the_scan_sees_third_party_imports() -> None:
    """The check above would pass on an empty scan: it does see what the app imports."""
    assert {"fastapi", "sqlalchemy", "itsdangerous"} <= third_party(imported(RUNTIME))
    assert {"pytest", "schemathesis"} <= third_party(imported(DEVELOPMENT))
