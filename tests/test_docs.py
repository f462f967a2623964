"""The documentation works from a clone: every relative link in README.md and docs/*.md
names a file of the repository (and, into a Markdown file, a heading it has), and nothing
points outside the repository. Pure file reading: no server, no Redis."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
# [text](target "title") and ![alt](target); the target may be in <...>.
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks (their brackets are code, not links)."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Every link target of a Markdown text, code blocks and code spans left out."""
    prose = CODE_SPAN.sub("", _prose(text))
    found = [m.group(1) for pattern in (INLINE, REFERENCE, HTML) for m in pattern.finditer(prose)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in found]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(_prose(path.read_text(encoding="utf-8"))):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def local_targets(doc: Path) -> list[tuple[str, Path, str]]:
    """(link as written, the file it names, its #fragment) for each link that is not a URL."""
    out = []
    for target in links(doc.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:  # https:, mailto:, //host: not a file of ours
            continue
        path = doc if not parts.path else (doc.parent / unquote(parts.path))
        out.append((target, path, unquote(parts.fragment)))
    return out


def test_the_parser_finds_links_and_skips_code() -> None:
    text = ("See [the protocol](docs/protocol.md#errors), ![a picture](<docs/a b.png> \"t\").\n"
            "Not `[code](nope.md)`, nor:\n\n```sh\ncat [x](y.md)\n```\n\n[ref]: ../outside.md\n"
            '<a href="x.md">x</a>\n')
    assert links(text) == ["docs/protocol.md#errors", "docs/a b.png", "../outside.md", "x.md"]
    assert slug("Reconnecting correctly") == "reconnecting-correctly"
    assert slug("Redis layout (for operators)") == "redis-layout-for-operators"
    assert slug("What happens when...") == "what-happens-when"
    assert slug("`quart-chat bench`: figures") == "quart-chat-bench-figures"


def test_docs_exist() -> None:
    assert (ROOT / "docs" / "protocol.md").is_file()
    assert "docs/protocol.md" in links((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    problems = []
    for target, path, fragment in local_targets(doc):
        resolved = path.resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not problems, f"broken links in {doc.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_outside_the_repository(doc: Path) -> None:
    """A code span such as `../shared/PROTOCOL.md` sends a reader of a clone nowhere."""
    text = _prose(doc.read_text(encoding="utf-8"))
    outside = sorted({m.group(2).strip() for m in CODE_SPAN.finditer(text) if m.group(2).strip().startswith("../")})
    assert not outside, f"{doc.relative_to(ROOT)} names paths outside the repository: {outside}"
