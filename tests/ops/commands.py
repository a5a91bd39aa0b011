"""Container commands (the image's CMD, the k8s Deployment and Job) parsed by the real
`sidekiq-supervisor` command line, so a renamed command or option fails a test."""

from __future__ import annotations

import tomllib
from pathlib import Path

import typer
from typer.core import TyperGroup

from app.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
NOT_OUR_SCRIPT = "{argv} does not start with a console script of pyproject.toml ({scripts})"
UNKNOWN = "{argv}: `{name}` is not a sidekiq-supervisor command (known: {known})"


def parse_command(argv: list[str]) -> tuple[str, dict[str, object]]:
    """The subcommand `argv` runs and its parsed parameters; fails the test if the CLI refuses
    it (unknown command, unknown option, bad value)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get(argv[0]) == "app.cli.main:main", NOT_OUR_SCRIPT.format(
        argv=argv, scripts=scripts
    )
    group = typer.main.get_command(cli)
    assert isinstance(group, TyperGroup)
    name, *rest = argv[1:]
    command = group.commands.get(name)
    assert command is not None, UNKNOWN.format(argv=argv, name=name, known=sorted(group.commands))
    context = command.make_context(name, list(rest))
    return name, dict(context.params)


def option_names(subcommand: str) -> set[str]:
    group = typer.main.get_command(cli)
    assert isinstance(group, TyperGroup)
    return {param.name for param in group.commands[subcommand].params if param.name}
