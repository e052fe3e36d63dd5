"""Every relative link of the Markdown files reaches a file, and its #anchor a heading (issue 27).

docs/ was split into user guides and lab notes (docs/notes/); a link to a moved file or a
renamed section fails here. Anchors follow GitHub's rule: the heading in lower case, without
punctuation other than hyphens and underscores, spaces turned into hyphens, and -1, -2, ...
added to repeated headings.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", ".git", "shared", "node_modules", "output", "data", "model"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return sorted(path for path in REPO.rglob("*.md")
                  if not any(part in SKIP_DIRS or part.startswith(".")
                             for part in path.relative_to(REPO).parts[:-1]))


def strip_code(text: str) -> str:
    """The text without fenced blocks, so that a '# comment' in a shell block is no heading."""
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown text."""
    anchors, seen = set(), {}
    for line in strip_code(text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """'file: link (why)' for each relative link of one file that leads nowhere."""
    text = strip_code(path.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(
                linked.read_text(encoding="utf-8")):
            broken.append(f"{path.relative_to(root)}: {target} (no such heading)")
    return broken


def test_anchor_rule_matches_github():
    text = ("# Speed: what sets it\n## 1.2 `train.py`\n## Checkpoints, `kill -9`, full disks\n"
            "## Notes\n## Notes\n```bash\n# not a heading\n```\n")
    assert heading_anchors(text) == {"speed-what-sets-it", "12-trainpy",
                                     "checkpoints-kill--9-full-disks", "notes", "notes-1"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "GUIDE.md").write_text("# Guide\n## Bad records\n", encoding="utf-8")
    page = tmp_path / "PAGE.md"
    page.write_text("[ok](GUIDE.md#bad-records) [here](#page) [web](https://x.org/a.md)\n"
                    "[gone](OLD.md) [moved](GUIDE.md#memory)\n# Page\n", encoding="utf-8")
    assert broken_links(page, tmp_path) == ["PAGE.md: OLD.md (no such file)",
                                  "PAGE.md: GUIDE.md#memory (no such heading)"]


def test_every_relative_link_of_the_docs_resolves():
    files = markdown_files()
    assert REPO / "README.md" in files and REPO / "docs" / "README.md" in files
    broken = [line for path in files for line in broken_links(path)]
    assert not broken, "\n".join(broken)


def test_docs_index_lists_every_guide_and_note():
    """docs/README.md links every page of docs/ and docs/notes/ (a new page needs its line)."""
    docs = REPO / "docs"
    index = docs / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve()
              for target in LINK.findall(strip_code(index.read_text(encoding="utf-8")))
              if not re.match(r"^[a-z][a-z0-9+.-]*:", target)}
    pages = [path for path in sorted(docs.glob("*.md")) + sorted(docs.glob("notes/*.md"))
             if path != index]
    missing = [str(path.relative_to(REPO)) for path in pages if path.resolve() not in linked]
    assert not missing, f"add a line for each to docs/README.md: {missing}"
