"""The dashboards' queries as Grafana sends them: template variables substituted, the MySQL
data source's macros expanded, and the metric names a PromQL expression reads."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The MySQL data source's expansion, as Grafana does it:
# github.com/grafana/grafana pkg/tsdb/mysql/macros.go (mySQLMacroEngine.evaluateMacro, read at
# commit 0b596ec909baa92dcc5ad32d64ea1decf8746aeb) and
# pkg/tsdb/sqleng/sql_engine.go (Interpolate: $__interval_ms, $__interval, $__unixEpochFrom(),
# $__unixEpochTo() first, then the data source's macros). A macro is `$name(args)` with no
# parenthesis inside its arguments, split on commas and trimmed, as this pattern is there.
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
# Grafana's variable syntaxes: $name, ${name}, ${name:format} and the deprecated [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
INTERVAL = re.compile(r"(\d+)(ms|s|m|h|d|w)")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.DOTALL)

UNKNOWN_MACRO = "unknown Grafana MySQL macro ${name}"
BAD_INTERVAL = "not a Grafana interval: {text!r}"
NOT_LABEL_VALUES = "not a label_values(<selector>, <label>) query: {query!r}"


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A dashboard's time range, as aware UTC datetimes."""

    start: datetime
    end: datetime

    @property
    def start_epoch(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_epoch(self) -> int:
        return int(self.end.timestamp())


def interval_seconds(text: str) -> int:
    """Grafana's interval text ("1m", "30s", "5m") in whole seconds."""
    match = INTERVAL.fullmatch(text.strip().strip("'\""))
    if match is None or match.group(2) == "ms":
        raise ValueError(BAD_INTERVAL.format(text=text))
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def interval_text(seconds: int) -> str:
    """The text Grafana puts in $__interval for an interval of `seconds`."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def variables_in(text: str) -> Iterator[str]:
    """Every template variable `text` refers to (Grafana's own `__` names included)."""
    for match in VARIABLE.finditer(text):
        yield next(group for group in match.groups() if group is not None)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace the variables named in `values`; other `$` names (macros) stay as they are."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return values.get(name, match.group(0))

    # \w+ takes the whole name: $__interval_ms is never read as $__interval and "_ms".
    return VARIABLE.sub(replace, text)


def sql_list(values: list[str]) -> str:
    """A multi-value variable as the SQL data sources format it: quoted, comma-separated."""
    return ",".join("'" + value.replace("'", "''") + "'" for value in values)


def expand_mysql(sql: str, span: TimeRange, interval: int) -> str:
    """`sql` after Grafana's global substitutions and the MySQL data source's macros."""
    sql = sql.replace("$__interval_ms", str(interval * 1000))
    sql = sql.replace("$__interval", interval_text(interval))
    sql = sql.replace("$__unixEpochFrom()", str(span.start_epoch))
    sql = sql.replace("$__unixEpochTo()", str(span.end_epoch))

    def replace(match: re.Match[str]) -> str:
        args = [arg.strip() for arg in match.group(2).split(",")]
        return _mysql_macro(match.group(1), args, span)

    return MACRO.sub(replace, sql)


def _mysql_macro(name: str, args: list[str], span: TimeRange) -> str:
    start, end = span.start_epoch, span.end_epoch
    if name in ("__time", "__timeEpoch"):
        return f"UNIX_TIMESTAMP({args[0]}) as time_sec"
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN FROM_UNIXTIME({start}) AND FROM_UNIXTIME({end})"
    if name == "__timeFrom":
        return f"FROM_UNIXTIME({start})"
    if name == "__timeTo":
        return f"FROM_UNIXTIME({end})"
    if name in ("__timeGroup", "__timeGroupAlias"):
        step = interval_seconds(args[1])  # a third argument (fill) changes no SQL
        alias = ' AS "time"' if name == "__timeGroupAlias" else ""
        return f"UNIX_TIMESTAMP({args[0]}) DIV {step} * {step}{alias}"
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {start} AND {args[0]} <= {end}"
    if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
        step = interval_seconds(args[1])
        alias = ' AS "time"' if name == "__unixEpochGroupAlias" else ""
        return f"{args[0]} DIV {step} * {step}{alias}"
    raise ValueError(UNKNOWN_MACRO.format(name=name))


def prometheus_query(query: Any) -> str:
    """A Prometheus variable's query text (a string, or the query editor's object)."""
    text = query["query"] if isinstance(query, dict) else query
    assert isinstance(text, str)
    return text


def label_values_selector(query: str) -> str:
    """label_values(<selector>, <label>) as the series selector Grafana sends."""
    match = LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(NOT_LABEL_VALUES.format(query=query))
    return match.group(1).strip()


# What is left of a PromQL expression once strings, matchers, ranges and groupings are gone:
# identifiers that are neither calls nor keywords are metric names.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGES = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
OFFSET = re.compile(r"\boffset\s+-?\w+")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
KEYWORDS = frozenset(
    "and or unless bool by without on ignoring group_left group_right offset inf nan".split()
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    stripped = STRING.sub('""', expr)
    for pattern in (MATCHERS, RANGES, GROUPING, OFFSET):
        stripped = pattern.sub(" ", stripped)
    return {
        match.group(1)
        for match in IDENTIFIER.finditer(stripped)
        if match.group(2) is None and match.group(1).lower() not in KEYWORDS
    }
