"""The documentation works from a clone: every relative link and image in README.md and
docs/*.md names a file of the repository (and, into a Markdown file, a heading it has), every
file a page names in a code span exists, nothing points outside the repository, the README
links every page of docs/, each page starts by saying what it covers, and the pages give one
memory figure per connection. Pure file reading: no server, no Redis."""

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


# A path in a code span, such as `deploy/nginx.conf` or `tests/test_links.py/`: words, dots and
# dashes, at least one slash.
REPO_PATH = re.compile(r"[\w.\-]+(?:/[\w.\-@]*)+")


def named_paths(text: str) -> list[str]:
    """Code spans of a Markdown text's prose that name a path under one of the repository's
    top-level folders (`deploy/nginx.conf`, `.ci/run`); code blocks left out."""
    out = []
    for m in CODE_SPAN.finditer(_prose(text)):
        span = m.group(2).strip()
        first = span.split("/", 1)[0]
        if REPO_PATH.fullmatch(span) and not first.startswith(".venv") and (ROOT / first).is_dir():
            out.append(span)
    return out


def test_named_paths_finds_repository_paths() -> None:
    text = "Run `deploy/nginx.conf`, `.ci/run`, `tests/`; not `wire.py`, `/etc/x/y`, `a b/c`.\n```\ndocs/nope.md\n```\n"
    assert named_paths(text) == ["deploy/nginx.conf", ".ci/run", "tests/"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(doc: Path) -> None:
    """A file named in a code span (`deploy/prometheus-alerts.yml`) is there: the pages name
    many files of the repository without linking them, and a renamed one must not be left."""
    missing = [p for p in named_paths(doc.read_text(encoding="utf-8")) if not (ROOT / p).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def test_every_page_is_linked_from_the_readme() -> None:
    """A newcomer finds every page from the README; a page nobody links is lost."""
    readme = ROOT / "README.md"
    linked = {path.resolve() for _, path, _ in local_targets(readme)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"README.md links no {unlinked}"


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_page_starts_by_saying_what_it_covers(doc: Path) -> None:
    """A title, then a paragraph of prose (not a table, list, code or another heading)."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", doc.read_text(encoding="utf-8").strip())]
    assert blocks[0].startswith("# ") and "\n" not in blocks[0], f"{doc.name}: no title line first"
    first = blocks[1] if len(blocks) > 1 else ""
    assert first and not re.match(r"(#|\||[-*+] |\d+\. |```|~~~|!\[|<)", first), (
        f"{doc.name}: the title is not followed by a paragraph saying what the page covers")


def test_one_memory_figure_per_connection() -> None:
    """The capacity plan uses the idle memory per connection that the performance run measured
    (one figure, from one run), and the README's pages agree on the memory it gives."""
    scaling = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    planned = re.search(r"^\| memory per idle connection \| \*\*([\d.]+) KB\*\*", scaling, re.M)
    measured = re.search(r"^\| idle, [^|]*KB of server RSS per connection \| ([\d.]+) \|", performance, re.M)
    assert planned and measured, "the memory rows of docs/scaling.md or docs/performance.md moved"
    assert planned.group(1) == measured.group(1)
    assert f"memory ≈ `U × {planned.group(1)} KB`" in scaling
    row = re.compile(r"^\| connection memory, all instances \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", re.M)
    deploying = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    plan = row.search(scaling)
    assert plan, "docs/scaling.md: no connection memory row"
    users = (10_000, 100_000, 1_000_000)
    for n, cell in zip(users, plan.groups(), strict=True):
        gb = float(cell.strip().removesuffix(" GB"))
        assert abs(gb - n * float(planned.group(1)) / 1e6) <= 0.05 * gb, f"{n} users: {cell}"
        assert re.search(rf"^\| {n // 1000 if n < 1_000_000 else 1} (k|M) \|[^\n]*\| {re.escape(cell.strip())} \|",
                         deploying, re.M), f"docs/deploying.md disagrees for {n} users"
