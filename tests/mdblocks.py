"""Split markdown into fenced code blocks, inline code spans and links (for tests/test_docs.py).

Only what the project's docs use: ``` fences (optionally with a language), an optional
``<!-- doctest: skip REASON -->`` comment on the line before a fence, `code spans` and [text](target) links.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SKIP = re.compile(r"<!--\s*doctest:\s*skip\b(.*?)-->")


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the opening fence
    lang: str          # "" for a plain fence
    code: str
    skip: str | None   # the reason, when the block is marked doctest: skip


def doc_files(root: Path) -> list[Path]:
    """README.md, CONVENTIONS.md and every docs/*.md, sorted."""
    files = [root / "README.md", root / "CONVENTIONS.md", *sorted((root / "docs").glob("*.md"))]
    return [f for f in files if f.exists()]


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, in order.

    Raises:
        ValueError: a fence that is never closed.
    """
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        skip = None
        if start > 0:
            s = SKIP.search(lines[start - 1])
            if s:
                skip = s.group(1).strip()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{start + 1}: code fence never closed")
        blocks.append(Block(path, start + 1, lang, "\n".join(lines[i + 1:j]) + "\n", skip))
        i = j + 1
    return blocks


def _prose(path: Path):
    """(line number, text) of every line outside fenced blocks."""
    inside = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            yield n, line


def code_spans(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every single-backtick code span outside fenced blocks."""
    return [(n, m.group(1)) for n, line in _prose(path) for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", line)]


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link or image outside fenced blocks."""
    return [(n, m.group(1)) for n, line in _prose(path) for m in re.finditer(r"\]\(([^)\s]+)\)", line)]
