"""The README and docs/ stand alone: every relative link resolves inside the repository, nothing
points outside it, and every command they show runs from a fresh clone as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT_READMES = ("k8s", "grafana", "alerts", "clients/ruby")
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    + [ROOT / folder / "README.md" for folder in KIT_READMES]
)
# [text](target): the target up to a space or the closing parenthesis.
LINK = re.compile(r"\]\(([^)\s]+)")
EXTERNAL = ("http://", "https://", "mailto:")
# Words that only make sense to someone who read the documents the project started from.
OUTSIDE = re.compile(r"\.\./shared|\bseeds?\b", re.IGNORECASE)
# A shell command that starts with the bare command name, which is not on PATH in a fresh clone.
BARE_COMMAND = re.compile(r"^\s*sidekiq-supervisor\b")
SHELL_BLOCK = re.compile(r"```(?:sh|bash|console)\n(.*?)```", re.DOTALL)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a document's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    broken = []
    for target in LINK.findall(document.read_text()):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        inside = resolved == ROOT or ROOT in resolved.parents
        if not inside or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_nothing_refers_to_documents_outside_the_repository(document: Path) -> None:
    assert OUTSIDE.findall(document.read_text()) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_shell_examples_name_the_command_as_a_fresh_clone_has_it(document: Path) -> None:
    bare = []
    for block in SHELL_BLOCK.findall(document.read_text()):
        previous = ""
        for line in block.splitlines():
            # A continued line (`docker run ... \`) goes on with arguments, not a command.
            if BARE_COMMAND.match(line) and not previous.endswith("\\"):
                bare.append(line)
            previous = line
    assert bare == []
