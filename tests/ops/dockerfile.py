"""The Dockerfile read as its instructions (continuations joined, comments dropped), split into
build stages, and .dockerignore's exclusions as Docker applies them to the build context."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT (after HEALTHCHECK's options)."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        found: list[str] = json.loads(text)
        return found


@dataclass(frozen=True, slots=True)
class Stage:
    image: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [step for step in self.instructions if step.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """Every `ENV name=value` pair of the stage (the only ENV form the Dockerfile uses)."""
        pairs = (
            re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", step.arguments) for step in self.all("ENV")
        )
        return {name: value for found in pairs for name, value in found}


def read_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [Instruction(*_split(line)) for line in logical]


def _split(line: str) -> tuple[str, str]:
    keyword, _, arguments = line.partition(" ")
    return keyword.upper(), arguments.strip()


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for step in read_instructions(path):
        if step.keyword == "FROM":
            image, _, name = step.arguments.partition(" AS ")
            stages.append(Stage(image.strip(), name.strip()))
        else:
            assert stages, f"{step.keyword} before the first FROM"
            stages[-1].instructions.append(step)
    return stages


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_excluded(relative: str, patterns: list[str]) -> bool:
    """Docker leaves a path out of the context when a pattern matches it or one of its parent
    directories (Go's filepath.Match: `*` stops at `/`; `**` spans directories). The file uses
    no `!` re-inclusions."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(_regex(pattern).fullmatch(prefix) for pattern in patterns for prefix in prefixes)


def _regex(pattern: str) -> re.Pattern[str]:
    translated = re.escape(pattern.strip("/"))
    translated = translated.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    translated = translated.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(translated)
