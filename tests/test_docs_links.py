"""README.md and docs/*.md: every relative link and picture names an existing file; README stays short."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^ *(```|~~~).*?^ *\1", flags=re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"; one level of brackets inside the text.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG_TAG = re.compile(r"<img\s[^>]*?src=\"([^\"]+)\"", flags=re.I)
EXTERNAL = ("http://", "https://", "mailto:")


def link_targets(text: str) -> list[str]:
    """The targets of the markdown links, images and <img> tags outside code."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return [m.group(1) for m in LINK.finditer(text)] + [m.group(1) for m in IMG_TAG.finditer(text)]


def broken_links(page: Path) -> list[str]:
    """Relative targets in `page` that do not name an existing file or folder (relative to its folder)."""
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if not target or target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        path = unquote(target.split("#", 1)[0])
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_exist(page: Path):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_readme_links_into_docs():
    targets = link_targets(README.read_text(encoding="utf-8"))
    assert any(t.startswith("docs/") for t in targets), "README links to no page or picture in docs/"


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


def test_broken_link_is_reported(tmp_path: Path):
    (tmp_path / "there.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.png) ![ok](there.png#x) [dir](sub) [anchor](#top) [web](https://example.org/x)\n"
        '[titled](there.png "a title") <img src="there.png" width="10">\n'
        "`[code](missing-in-code.md)`\n```\n[fenced](missing-in-fence.md)\n```\n"
        '[gone](missing.md#part) ![gone too](pics/missing.png) <img src="nope.gif">\n'
    )
    assert broken_links(page) == ["missing.md#part", "pics/missing.png", "nope.gif"]
