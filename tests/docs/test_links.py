"""Relative links in README.md and docs/*.md point to files that exist, and their #anchors to headings there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.test_commands import REPO, code_blocks, doc_files

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without its fenced code blocks."""
    lines = text.splitlines()
    for block in code_blocks(text):
        n = len(block.text.splitlines())
        for i in range(block.line - 1, min(len(lines), block.line + n + 1)):
            lines[i] = ""
    return "\n".join(lines)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in _prose(path.read_text(encoding="utf-8")).splitlines()
            if re.match(r"#{1,6} ", line)}


def broken_links(path: Path) -> list[str]:
    out = []
    for m in LINK.finditer(_prose(path.read_text(encoding="utf-8"))):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            out.append(f"{path.relative_to(REPO)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{path.relative_to(REPO)}: {target}: no heading #{anchor} in {dest.name}")
    return out


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(path: Path):
    assert broken_links(path) == []


def test_every_docs_page_is_linked_from_the_readme_or_index():
    linked = set()
    for page in (REPO / "README.md", REPO / "docs" / "index.md"):
        for m in LINK.finditer(page.read_text(encoding="utf-8")):
            target = (m.group(1) or m.group(2)).partition("#")[0]
            if target:
                linked.add((page.parent / target).resolve())
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set()


def test_broken_link_is_reported(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tests.docs.test_links.REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n[ok](a.md#title) [gone](b.md) [bad](a.md#nope)\n"
                                   "```bash\n[not a link](c.md)\n```\n")
    assert broken_links(tmp_path / "a.md") == ["a.md: b.md: no such file", "a.md: a.md#nope: no heading #nope in a.md"]
