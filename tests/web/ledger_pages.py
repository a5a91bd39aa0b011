"""Reading the GUI's HTML in tests: table cells as text, job links, form fields, the notice."""

from __future__ import annotations

import re
from html.parser import HTMLParser

JOB_LINK = re.compile(r'<a class="mono" href="/sidekiq/jobs/([^"?]+)">')
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
NOTICE = re.compile(r'<p class="notice" role="status">([^<]*)</p>')


class _Cells(HTMLParser):
    """Each <tr> of the tables whose class is `table_class`, as a list of its cells' text."""

    def __init__(self, table_class: str) -> None:
        super().__init__()
        self.table_class = table_class
        self.depth = 0  # >0 while inside a wanted table
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and (self.depth or self.table_class in classes):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join(" ".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, table_class: str) -> list[list[str]]:
    """The body rows (those with cells) of the table with that class, header row first."""
    parser = _Cells(table_class)
    parser.feed(html)
    return [row for row in parser.rows if row]


def listed_jobs(html: str) -> list[str]:
    return JOB_LINK.findall(html)


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found is not None, "the page has no form carrying a CSRF token"
    return found.group(1)


def notice_of(html: str) -> str | None:
    found = NOTICE.search(html)
    return None if found is None else found.group(1)
