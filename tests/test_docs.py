"""Every documentation reference in the code and config resolves inside the repository.

A reference is ``docs/<path>``, optionally followed by section numbers (``docs/design.md §3.4``,
``§4, §6``) or an anchor (``docs/design.md#4-measures``): the path must exist, each section number
must be the number of a heading of that file (``## 4. Measures``, ``### 3.4 …``) and an anchor the
slug of one of its headings. No reference to the design notes kept outside the repository remains.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "conf", "scripts", "notebooks", "tests", "README.md", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".ipynb", ".toml", ".txt", ".cfg", ".sh", ""}

REF = re.compile(
    r"(?<![\w/.-])docs/(?P<path>[A-Za-z0-9_][A-Za-z0-9_./-]*)"
    r"(?:#(?P<anchor>[A-Za-z0-9_-]+)"
    r"|(?P<sections>(?:\s*(?:,|and)?\s*§\s*\d+(?:\.\d+)*)+))?"
)
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)[.)]?(?:\s|$)")
# the design notes that live outside the repository, and the folders that held them
OUTSIDE = re.compile(
    r"(?<![\w/.-])(?:DESIGN|PAPER|CONVENTIONS|STACK-NOTES|ARCHITECTURE)(?:\.md\b|\s*§)"
    r"|shared/docs\b|shared/reference\b"
)


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in candidates:
            if p.suffix in SUFFIXES and "__pycache__" not in p.parts and p != Path(__file__).resolve():
                files.append(p)
    return files


def text_lines(path: Path) -> list[str]:
    """The file's lines; a notebook's cell sources (so line numbers count within its cells)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return [line.rstrip("\n") for cell in cells for line in cell.get("source", [])]
    return text.splitlines()


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def headings(path: Path) -> tuple[set[str], set[str]]:
    """(section numbers, anchors) of a Markdown file's headings, outside fenced code blocks."""
    numbers, anchors, fenced = set(), set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            title = m["title"]
            anchors.add(slug(title))
            n = NUMBERED.match(title)
            if n:
                numbers.add(n.group(1))
    return numbers, anchors


def where(path: Path, lineno: int) -> str:
    return f"{path.relative_to(ROOT)}:{lineno}"


def find_references() -> list[tuple[str, str, str | None, list[str]]]:
    refs = []
    for path in scanned_files():
        for lineno, line in enumerate(text_lines(path), 1):
            for m in REF.finditer(line):
                target = m["path"].rstrip(".,:;")
                sections = SECTION.findall(m["sections"] or "")
                refs.append((where(path, lineno), target, m["anchor"], sections))
    return refs


def test_scan_finds_the_references():
    """The scan sees the references it must check (a regex that matches nothing passes vacuously)."""
    refs = find_references()
    targets = {t for _, t, _, _ in refs}
    assert {"design.md", "paper.md"} <= targets
    assert any(s for _, t, _, s in refs if t == "design.md")
    assert REF.search("see docs/design.md §3.4, §6").group("sections") is not None
    assert SECTION.findall(REF.search("(docs/design.md §4, §6)")["sections"]) == ["4", "6"]
    assert REF.search("(docs/design.md#4-measures)")["anchor"] == "4-measures"
    assert OUTSIDE.search("DESIGN.md §4") and OUTSIDE.search("PAPER §2") and OUTSIDE.search("STACK-NOTES.md")
    assert not OUTSIDE.search("docs/design.md §4") and not OUTSIDE.search("docs/paper.md")


def test_doc_references_resolve():
    bad = []
    cache: dict[Path, tuple[set[str], set[str]]] = {}
    for loc, target, anchor, sections in find_references():
        path = ROOT / "docs" / target
        if not path.exists():
            bad.append(f"{loc}: docs/{target} does not exist")
            continue
        if not (sections or anchor):
            continue
        if path.suffix != ".md":
            bad.append(f"{loc}: docs/{target} has no headings to point into")
            continue
        numbers, anchors = cache.setdefault(path, headings(path))
        bad += [f"{loc}: docs/{target} has no heading numbered {s}" for s in sections if s not in numbers]
        if anchor and anchor not in anchors:
            bad.append(f"{loc}: docs/{target} has no heading with anchor #{anchor}")
    assert not bad, "unresolved documentation references:\n" + "\n".join(bad)


def test_no_reference_to_notes_outside_the_repository():
    bad = [
        f"{where(path, lineno)}: {line.strip()}"
        for path in scanned_files()
        for lineno, line in enumerate(text_lines(path), 1)
        if OUTSIDE.search(line)
    ]
    assert not bad, "references to design notes outside the repository (use docs/…):\n" + "\n".join(bad)


def test_links_between_docs_pages_resolve():
    """Relative Markdown links in docs/*.md and README.md point at files that exist."""
    link = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)")
    bad = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for lineno, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            bad += [
                f"{where(page, lineno)}: {t}" for t in link.findall(line) if not (page.parent / t).exists()
            ]
    assert not bad, "broken links:\n" + "\n".join(bad)
