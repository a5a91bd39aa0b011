"""Redaction of secrets in job arguments and error text (SUPERVISOR_REDACT_KEYS and _PATTERNS):
what the ledger stores, and what the GUI and the API show of Sidekiq's Redis. Pure: no I/O."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

REDACTED = "[REDACTED]"
WHOLLY_REDACTED = orjson.dumps(REDACTED).decode()
# Checks done once a value is known to hold JSON containers; cheaper than isinstance chains.
_CONTAINERS = (dict, list)


def split_keys(text: str) -> tuple[str, ...]:
    """SUPERVISOR_REDACT_KEYS as its names: comma-separated, blanks and spaces around dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


class Redactor:
    """Replaces the value of every object key matching one of `keys` (names or fnmatch globs,
    case-insensitive), at any depth, and every match of one of `patterns` inside strings.

    Built once from the settings. With neither, `active` is False and every method returns its
    input untouched without parsing anything (the ingest fast path).
    """

    __slots__ = ("_keys", "_patterns", "active")

    def __init__(self, keys: Iterable[str] = (), patterns: Sequence[str] = ()) -> None:
        globs = [fnmatch.translate(name.lower()) for name in keys]
        # One alternation for every key: a single match call per object key.
        self._keys = re.compile("|".join(globs), re.IGNORECASE) if globs else None
        self._patterns = tuple(re.compile(pattern) for pattern in patterns)
        self.active = bool(globs or self._patterns)

    @property
    def redacts_text(self) -> bool:
        """Whether any pattern is set (keys alone never change free text)."""
        return bool(self._patterns)

    def arguments(self, text: str | None) -> tuple[str | None, bool]:
        """Arguments as JSON text, redacted, and whether anything was replaced. The text is
        returned as given (byte for byte) when nothing matched; redacted, it is re-serialized.
        Text that is not JSON (a truncated value) only has the patterns applied. Redacted JSON
        nested deeper than orjson writes (255 levels; it reads 1,024) is stored as one redacted
        string: never the secret."""
        if not self.active or text is None:
            return text, False
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            redacted = self.text(text)
            return redacted, redacted != text
        value, changed = self.value(parsed)
        if not changed:
            return text, False
        try:
            return orjson.dumps(value).decode(), True
        except TypeError:
            return WHOLLY_REDACTED, True

    def value(self, value: Any) -> tuple[Any, bool]:
        """A parsed JSON value redacted in place (containers are modified; a bare string is
        returned replaced), and whether anything was replaced."""
        if not self.active:
            return value, False
        if isinstance(value, str):
            redacted = self.text(value)
            return redacted, redacted != value
        if not isinstance(value, _CONTAINERS):
            return value, False
        return value, self._walk(value)

    def text(self, text: str | None) -> str | None:
        """`text` with every pattern's matches replaced (error messages, backtrace lines)."""
        if text is None:
            return None
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def lines(self, lines: list[str]) -> tuple[list[str], bool]:
        """Each line through `text`, and whether any changed."""
        redacted = [self.text(line) or "" for line in lines]
        return redacted, redacted != lines

    def _walk(self, root: dict[str, Any] | list[Any]) -> bool:
        """Redact every container under `root` in place. A loop with a stack rather than
        recursion: orjson accepts nesting 1,024 deep, past Python's recursion limit. Values are
        replaced while iterating, never added or removed, which is safe."""
        changed = False
        stack: list[dict[str, Any] | list[Any]] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key, item in node.items():
                    new = REDACTED if self._secret_key(key) else self._visit(item, stack)
                    if new is not item:
                        node[key] = new
                        changed = True
            else:
                for index, item in enumerate(node):
                    new = self._visit(item, stack)
                    if new is not item:
                        node[index] = new
                        changed = True
        return changed

    def _visit(self, item: Any, stack: list[dict[str, Any] | list[Any]]) -> Any:
        """A string with the patterns applied (the same object when none matched); a container
        is queued for the walk."""
        if isinstance(item, str):
            if self._patterns and (replaced := self.text(item)) != item:
                return replaced
        elif isinstance(item, _CONTAINERS):
            stack.append(item)
        return item

    def _secret_key(self, name: str) -> bool:
        return self._keys is not None and self._keys.match(name) is not None


OFF = Redactor()
