"""The code's references to docs/ point at sections that exist.

Comments cite the project's own documentation as C{docs/protocol.rst §5.7},
C{docs/protocol.rst §9 item 28}, C{docs/test-lab.rst A.4} or
C{docs/architecture.rst A3}.  A reader following one must find that section,
so every citation in the source tree is checked against the headings of the
file it names, and nothing may cite documents outside the repository.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SOURCES = ("litedesk", "tests", "twisted", "bench", "protos", "conf")
SUFFIXES = {".py", ".proto", ".sh", ".rst", ".example", ".service"}

# A section heading: a title line whose next line is an underline of one
# character; the title starts with its number or label ("5.3 ...", "A.4 ...",
# "A3. ...", "B. ...").
_UNDERLINE = re.compile(r"^([=\-~^])\1+$")
_LABEL = re.compile(r"^([0-9]+(?:\.[0-9]+)?|[A-Z][0-9]?(?:\.[0-9]+)?)\.?\s")
# "docs/NAME.rst" and the references right after it.
_CITATION = re.compile(r"docs/([a-z][a-z-]*)\.rst")
_REFS = re.compile(
    r"§\s*([0-9]+(?:\.[0-9]+)?)(?:\s+items?\s+([0-9]+))?"
    r"|\bsections?\s+([0-9]+(?:\.[0-9]+)?|[A-D](?:\.[0-9]+)?)\b"
    r"|\b([A-D](?:\.[0-9]+)|A[0-9])\b"
)
# Outside references that must not come back.
_FOREIGN = re.compile(r"shared/docs|rustdesk-protocol\.md|test-lab\.md")


def sections(doc: Path) -> set[str]:
    """The section labels of an reStructuredText file."""
    lines = doc.read_text().splitlines()
    found = set()
    for title, under in itertools.pairwise(lines):
        if _UNDERLINE.match(under) and len(under) >= len(title.strip()) > 0:
            m = _LABEL.match(title.strip())
            if m:
                found.add(m.group(1))
    return found


def numbered_items(doc: Path, section: str) -> set[int]:
    """The numbers of the enumerated items ("N. ...") inside C{section}."""
    text = doc.read_text()
    start = re.search(rf"^{re.escape(section)}\.? .*\n[=\-~^]+$", text, re.MULTILINE)
    if start is None:
        return set()
    rest = text[start.end() :]
    end = re.search(r"^\S.*\n[=\-~^]{3,}$", rest, re.MULTILINE)
    body = rest[: end.start()] if end else rest
    return {int(n) for n in re.findall(r"^([0-9]+)\. ", body, re.MULTILINE)}


def citations(text: str) -> list[tuple[str, str, int | None]]:
    """(document, section, item) for every docs/ citation in C{text}."""
    # Comments wrap: join the lines and drop comment markers first.
    flat = re.sub(r"\s*\n\s*(?:#|//|\*)?\s*", " ", text)
    out: list[tuple[str, str, int | None]] = []
    for m in _CITATION.finditer(flat):
        # The references belong to this citation up to the end of its
        # parenthesis or sentence.
        tail = re.split(r"[)]|\.\s|:\s|docs/", flat[m.end() : m.end() + 80], maxsplit=1)[0]
        for ref in _REFS.finditer(tail):
            number, item, section, label = ref.groups()
            out.append((m.group(1), number or section or label, int(item) if item else None))
        if not _REFS.search(tail):
            out.append((m.group(1), "", None))
    return out


def _source_files() -> list[Path]:
    files = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            # This file's own examples are not citations.
            if path == Path(__file__).resolve() or "_pb2" in path.name:
                continue
            if path.is_file() and path.suffix in SUFFIXES:
                files.append(path)
    return files


# A file the docs name: ``litedesk/relay/server.py``, ``tests/support/natlab.py``,
# or, inside the package, ``rendezvous/registry.py``.
_DOC_PATH = re.compile(r"``((?:[a-z_]+/)+[a-z_][a-z_.-]*\.(?:py|rst|sh|txt|proto))``")
_TOP = ("litedesk/", "tests/", "conf/", "bench/", "protos/", "twisted/", "docs/")


def named_files(doc: Path) -> list[str]:
    """The repository paths C{doc} names, package-relative ones under litedesk/."""
    out = []
    for name in _DOC_PATH.findall(doc.read_text()):
        out.append(name if name.startswith(_TOP) else f"litedesk/{name}")
    return out


class DocumentedFilesTests(SynchronousTestCase):
    def test_files_named_by_the_docs_exist(self) -> None:
        """Every source file docs/ names (``litedesk/relay/server.py``,
        ``host/paths.py``, ``tests/support/xvfb.py`` ...) exists, so the docs
        follow the code when modules move."""
        named = [
            (doc.name, name) for doc in sorted(DOCS.glob("*.rst")) for name in named_files(doc)
        ]
        missing = [f"{doc}: {name}" for doc, name in named if not (REPO / name).exists()]
        self.assertEqual(missing, [])
        self.assertGreater(len(named), 50)


class CitationTests(SynchronousTestCase):
    def test_every_citation_names_an_existing_section(self) -> None:
        """Each "docs/NAME.rst §N", "section X", "A.4" or "§9 item N" in the code
        names a file in docs/ and a section (or numbered item) it has."""
        bad = []
        count = 0
        for path in _source_files():
            for doc, section, item in citations(path.read_text(errors="replace")):
                count += 1
                where = f"{path.relative_to(REPO)}: docs/{doc}.rst {section}"
                target = DOCS / f"{doc}.rst"
                if not target.exists():
                    bad.append(f"{where}: no such file")
                elif section and section not in sections(target):
                    bad.append(f"{where}: no such section")
                elif item is not None and item not in numbered_items(target, section):
                    bad.append(f"{where} item {item}: no such item")
        self.assertEqual(bad, [])
        self.assertGreater(count, 30)

    def test_no_citation_of_documents_outside_the_repository(self) -> None:
        """Nothing cites ../shared/docs or the old rustdesk-protocol.md and
        test-lab.md, which are not part of the repository."""
        found = [
            f"{path.relative_to(REPO)}:{n}"
            for path in _source_files()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if _FOREIGN.search(line)
        ]
        self.assertEqual(found, [])

    def test_checker_finds_a_missing_section(self) -> None:
        """The checker itself: a citation of a section the document lacks is
        reported, one that exists is not."""
        doc = Path(self.mktemp())
        doc.write_text("Title\n=====\n\n5. Server\n=========\n\n5.3 UDP\n-------\n\n1. one\n")
        self.assertEqual(sections(doc), {"5", "5.3"})
        self.assertEqual(numbered_items(doc, "5.3"), {1})
        text = "# see docs/protocol.rst §5.3 and §5.4,\n# and docs/test-lab.rst A.4.\n"
        self.assertEqual(
            citations(text),
            [("protocol", "5.3", None), ("protocol", "5.4", None), ("test-lab", "A.4", None)],
        )
        self.assertEqual(citations("(docs/protocol.rst §9 item 28)"), [("protocol", "9", 28)])
