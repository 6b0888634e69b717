"""The command blocks of README.md and docs/*.md that a test runs: each follows a comment
`<!-- tested: tests/e2e/test_docs_sequences.py::NAME -->` directly above its fence."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "tests/e2e/test_docs_sequences.py::"
_BLOCK = re.compile(r"<!-- tested: " + re.escape(MARKER) + r"([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)


@dataclass(frozen=True)
class DocBlock:
    name: str
    page: Path
    language: str
    text: str


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def marked_blocks() -> list[DocBlock]:
    return [DocBlock(m.group(1), page, m.group(2), m.group(3))
            for page in doc_pages() for m in _BLOCK.finditer(page.read_text())]


def marker_count() -> int:
    """How many markers name the docs test, fence or not (a marker not on a fence is a mistake)."""
    marker = re.compile("^<!-- tested: " + re.escape(MARKER), re.M)
    return sum(len(marker.findall(page.read_text())) for page in doc_pages())


def block(name: str) -> DocBlock:
    """The block of that name; README and docs may both show it, then they must agree."""
    found = [b for b in marked_blocks() if b.name == name]
    assert found, f"no docs block is marked {MARKER}{name}"
    assert len({b.text for b in found}) == 1, f"{name} differs between {[str(b.page) for b in found]}"
    return found[0]
