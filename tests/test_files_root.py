"""litedesk.files.root: every path a viewer names stays inside the file root.

Hypothesis builds path strings from dangerous pieces (C{..}, absolute
paths, NUL, links leading out and in); none resolves or opens outside.
Links that lead out are refused in any component and as the final
component of a write; links that stay inside work; a directory swapped
for a link while the host opens a file under it never lets the outside
file be read (a real race, run many times).
"""

from __future__ import annotations

import os
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.listing import read_dir, recursive_files
from litedesk.files.root import NOT_EXISTS, OUTSIDE, FileRoot, PathRefused

SECRET = b"outside secret"
INSIDE = b"inside data"


class _Tree:
    """root/ (sub/file, inlink -> sub, outlink -> outside/, filelink -> outside/secret)
    and outside/secret next to it."""

    def __init__(self, base: str) -> None:
        self.base = os.path.realpath(base)
        self.root = os.path.join(self.base, "root")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "secret"), "wb") as f:
            f.write(SECRET)
        with open(os.path.join(self.root, "sub", "file"), "wb") as f:
            f.write(INSIDE)
        os.symlink(os.path.join(self.root, "sub"), os.path.join(self.root, "inlink"))
        os.symlink("../outside", os.path.join(self.root, "outlink"))
        os.symlink(os.path.join(self.outside, "secret"), os.path.join(self.root, "filelink"))
        self.file_root = FileRoot(self.root)


PIECES = st.sampled_from(
    [
        "..",
        ".",
        "sub",
        "file",
        "inlink",
        "outlink",
        "filelink",
        "secret",
        "outside",
        "root",
        "",
        "/",
        "//",
        "x\x00y",
        "etc",
        "new",
    ]
)


def _path(pieces: list[str], absolute: bool, prefix: str) -> str:
    p = "/".join(pieces)
    return (prefix + "/" + p) if absolute else p


class ResolveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.t = _Tree(self.mktemp())
        self.r = self.t.file_root

    def test_relative_and_absolute_inside(self) -> None:
        want = os.path.join(self.t.root, "sub", "file")
        self.assertEqual(self.r.resolve("sub/file"), want)
        self.assertEqual(self.r.resolve(want), want)
        self.assertEqual(self.r.resolve(""), self.t.root)
        self.assertEqual(self.r.resolve("sub/../sub/./file"), want)

    def test_escapes_are_refused(self) -> None:
        for remote in (
            "..",
            "../outside/secret",
            "/etc/passwd",
            "sub/../../outside",
            "outlink",
            "outlink/secret",
            "filelink",
            "a\x00b",
            self.t.outside,
        ):
            e = self.assertRaises(PathRefused, self.r.resolve, remote)
            self.assertEqual(e.reason, OUTSIDE, remote)

    def test_links_inside_work(self) -> None:
        fd, path = self.r.open_file("inlink/file")
        with os.fdopen(fd, "rb") as f:
            self.assertEqual(f.read(), INSIDE)
        self.assertEqual(path, os.path.join(self.t.root, "sub", "file"))
        names = [e.name for e in read_dir(self.r, "inlink", False).entries]
        self.assertEqual(names, ["file"])

    def test_missing_path_says_not_exists(self) -> None:
        e = self.assertRaises(PathRefused, self.r.open_dir, "nothing")
        self.assertEqual(e.reason, NOT_EXISTS)
        e = self.assertRaises(PathRefused, self.r.open_parent, "nothing/file")
        self.assertEqual(e.reason, NOT_EXISTS)

    def test_reads_through_links_out_are_refused(self) -> None:
        for op, remote in (
            (self.r.open_file, "filelink"),
            (self.r.open_file, "outlink/secret"),
            (self.r.open_dir, "outlink"),
        ):
            e = self.assertRaises(PathRefused, op, remote)
            self.assertEqual(e.reason, OUTSIDE)
        self.assertRaises(PathRefused, recursive_files, self.r, "outlink", True)

    def test_recursive_list_does_not_follow_links(self) -> None:
        """RustDesk lists files only: links (in or out) are neither listed nor entered."""
        _, files = recursive_files(self.r, "", True)
        self.assertEqual([f.name for f in files], ["sub/file"])

    def test_writes_through_links_out_are_refused(self) -> None:
        for remote in ("outlink/new", "filelink", "outlink/deeper/new", "../x"):
            e = self.assertRaises(PathRefused, self.r.open_parent, remote, True)
            self.assertEqual(e.reason, OUTSIDE, remote)
        self.assertEqual(sorted(os.listdir(self.t.outside)), ["secret"])

    def test_write_parent_is_created_inside(self) -> None:
        fd, name, shown = self.r.open_parent("inlink/a/b/new.txt", create=True)
        os.close(fd)
        self.assertEqual(name, "new.txt")
        self.assertEqual(shown, os.path.join(self.t.root, "sub", "a", "b", "new.txt"))
        self.assertTrue(os.path.isdir(os.path.join(self.t.root, "sub", "a", "b")))

    @settings(max_examples=400, deadline=None)
    @given(st.lists(PIECES, max_size=6), st.booleans(), st.sampled_from(["", "root", "outside"]))
    def test_nothing_resolves_or_opens_outside(
        self, pieces: list[str], absolute: bool, where: str
    ) -> None:
        prefix = os.path.join(self.t.base, where) if where else self.t.base
        remote = _path(pieces, absolute, prefix)
        try:
            resolved = self.r.resolve(remote)
        except PathRefused:
            pass
        else:
            self.assertTrue(self.r.inside(os.path.realpath(resolved)), remote)
        for op in (self.r.open_file, self.r.open_dir):
            try:
                fd, _ = op(remote)
            except PathRefused:
                continue
            try:
                where_fd = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            self.assertTrue(self.r.inside(where_fd), remote)
        try:
            fd, name, _ = self.r.open_parent(remote, create=True)
        except PathRefused:
            pass
        else:
            try:
                self.assertTrue(self.r.inside(os.readlink(f"/proc/self/fd/{fd}")), remote)
                self.assertNotIn("/", name)
            finally:
                os.close(fd)
        self.assertEqual(sorted(os.listdir(self.t.outside)), ["secret"])


class RaceTests(SynchronousTestCase):
    def test_directory_swapped_for_a_link_never_leaks(self) -> None:
        """While a thread swaps root/d between a real directory (holding
        d/secret with inside data) and a link to the outside directory, the
        host's open of d/secret either reads the inside file or is refused."""
        t = _Tree(self.mktemp())
        d = os.path.join(t.root, "d")
        real = os.path.join(t.root, "real")
        os.makedirs(real)
        with open(os.path.join(real, "secret"), "wb") as f:
            f.write(INSIDE)
        stop = threading.Event()

        def swap() -> None:
            while not stop.is_set():
                os.symlink(real, d + ".tmp")
                os.replace(d + ".tmp", d)
                os.symlink(t.outside, d + ".tmp")
                os.replace(d + ".tmp", d)

        thread = threading.Thread(target=swap)
        thread.start()
        outcomes = {"read": 0, "refused": 0}
        try:
            for _ in range(3000):
                try:
                    fd, _ = t.file_root.open_file("d/secret")
                except PathRefused:
                    outcomes["refused"] += 1
                    continue
                with os.fdopen(fd, "rb") as src:
                    self.assertEqual(src.read(), INSIDE)
                outcomes["read"] += 1
        finally:
            stop.set()
            thread.join()
        self.assertEqual(sum(outcomes.values()), 3000)
        self.assertGreater(outcomes["refused"], 0)

    def test_write_parent_swapped_for_a_link_never_writes_outside(self) -> None:
        t = _Tree(self.mktemp())
        d = os.path.join(t.root, "d")
        os.symlink(os.path.join(t.root, "sub"), d)
        stop = threading.Event()

        def swap() -> None:
            while not stop.is_set():
                os.symlink(t.outside, d + ".tmp")
                os.replace(d + ".tmp", d)
                os.symlink(os.path.join(t.root, "sub"), d + ".tmp")
                os.replace(d + ".tmp", d)

        thread = threading.Thread(target=swap)
        thread.start()
        try:
            for i in range(1000):
                try:
                    fd, _name, _ = t.file_root.open_parent(f"d/new{i}/f", create=True)
                except PathRefused:
                    continue
                try:
                    self.assertTrue(t.file_root.inside(os.readlink(f"/proc/self/fd/{fd}")))
                finally:
                    os.close(fd)
        finally:
            stop.set()
            thread.join()
        self.assertEqual(sorted(os.listdir(t.outside)), ["secret"])
