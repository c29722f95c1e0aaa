"""The viewer window's F8 -> Files... and F8 -> Forward a port...

Covered here:

  - the Files window's pure parts: what the panes show (directories first,
    sizes, host paths with either separator), which selected items become
    transfers (a host name that is not one plain component never does),
    the progress bars and speed on a test clock, and the run's summary line;
  - the Files window itself, a real Tk Toplevel on its own Xvfb in the
    test process, against a real host agent (the lab of
    L{tests.test_viewer_window}) started with C{--file-root}: the host
    pane lists the root, Upload and Download copy files and folders
    (checked by SHA-256 on disk), an existing file is skipped unless
    "Overwrite existing" is ticked, Cancel stops a transfer and the same
    button again resumes it, a host with C{--no-file-transfer} and a path
    outside the root are reported with their reason;
  - the forward dialog against the same host's C{--allow-forward}: a
    connection to the local port reaches a TCP echo server through the
    host, and a target that is not allowed shows "forward not allowed";
  - the real viewer process: F8 then the entries' letters open both
    windows (xdotool), the Files window lists the host's root and the
    forward dialog, filled in from the keyboard, forwards a connection.

The buttons are pressed with their C{invoke()} (what a click runs) and rows
selected with the Treeview's selection, so that the in-process tests do
not depend on where a window manager-less Xvfb puts the widgets.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import threading
import tkinter as tk
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import message_pb2 as pb
from litedesk.viewer import connection
from litedesk.viewer.file_listing import (
    fmt_size,
    local_entries,
    plan_downloads,
    plan_uploads,
    remote_join,
    remote_parent,
    safe_local_name,
    sorted_entries,
)
from litedesk.viewer.file_pane import FilePane
from litedesk.viewer.files_window import FilesWindow, LocalSide
from litedesk.viewer.forward_dialog import ForwardDialog
from litedesk.viewer.forward_link import parse_port
from litedesk.viewer.transfer_progress import RunSummary, TransferMeter

from .support.e2e_lab import Lab, lab
from .support.polling import until, wait_until
from .support.skips import requires
from .support.xvfb import shared_xvfb
from .test_viewer_window import WINDOW_NEEDS, _viewer

PASSWORD = "e2e-password"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry(name: str, kind: int = pb.File, size: int = 0) -> pb.FileEntry:
    return pb.FileEntry(entry_type=kind, name=name, size=size)  # type: ignore[arg-type]


# -- the pure parts --------------------------------------------------------------------


class ListingTests(SynchronousTestCase):
    def test_directories_first_by_name(self) -> None:
        """Directories (and links to them, and drives) come before files, each
        group by name regardless of case."""
        got = sorted_entries(
            [
                entry("b.txt"),
                entry("Zeta", pb.Dir),
                entry("a.txt"),
                entry("alpha", pb.DirLink),
                entry("C:", pb.DirDrive),
                entry("B.md", pb.FileLink),
            ]
        )
        self.assertEqual([e.name for e in got], ["alpha", "C:", "Zeta", "a.txt", "B.md", "b.txt"])

    def test_sizes(self) -> None:
        self.assertEqual(
            [fmt_size(n) for n in (0, 999, 1000, 1_500_000, 3 * 10**12, 10**16)],
            ["0 B", "999 B", "1.0 KB", "1.5 MB", "3.0 TB", "10000.0 TB"],
        )

    def test_host_paths(self) -> None:
        """Host paths are joined and climbed with the separator they use: a
        Linux host's slashes, a Windows host's backslashes and drive roots."""
        self.assertEqual(remote_join("/srv/files", "a b"), "/srv/files/a b")
        self.assertEqual(remote_join("/", "etc"), "/etc")
        self.assertEqual(remote_join("C:\\Users", "me"), "C:\\Users\\me")
        self.assertEqual(remote_parent("/srv/files/x"), "/srv/files")
        self.assertEqual(remote_parent("/srv"), "/")
        self.assertEqual(remote_parent("/"), "/")
        self.assertEqual(remote_parent("C:\\Users\\me"), "C:\\Users")
        self.assertEqual(remote_parent("C:\\Users"), "C:\\")

    @given(
        st.lists(
            st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=12),
            min_size=1,
            max_size=5,
        ),
        st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=12),
    )
    def test_parent_of_join(self, parts: list[str], name: str) -> None:
        """Going into a directory and Up again lands where one started."""
        d = "/" + "/".join(parts)
        self.assertEqual(remote_parent(remote_join(d, name)), d)

    @given(st.lists(st.text(max_size=20), max_size=20))
    def test_downloads_stay_in_the_local_directory(self, names: list[str]) -> None:
        """Whatever names the host lists, a download goes into the chosen local
        directory only for names that are one plain component there."""
        local = Path("/tmp/dest")
        jobs = plan_downloads("/srv/root", names, local)
        self.assertEqual([j.name for j in jobs], [n for n in names if safe_local_name(n)])
        for j in jobs:
            self.assertEqual(Path(j.dest), local)
            self.assertEqual((local / j.name).parent, local)
            self.assertNotIn(j.name, ("", ".", ".."))

    def test_uploads_go_into_the_host_directory(self) -> None:
        """An upload names the host directory with its separator, so the file
        client puts the item inside it under its own name."""
        jobs = plan_uploads(Path("/home/me"), ["a.txt", "photos"], "/srv/root")
        self.assertEqual(
            [(j.source, j.dest) for j in jobs],
            [
                ("/home/me/a.txt", "/srv/root/"),
                ("/home/me/photos", "/srv/root/"),
            ],
        )
        self.assertEqual(plan_uploads(Path("/x"), ["f"], "C:\\data")[0].dest, "C:\\data\\")

    def test_local_entries(self) -> None:
        """The local pane shows files with sizes, directories, links by what
        they point to, a dangling link as a link, and no hidden files."""
        d = Path(self.mktemp()).resolve()
        (d / "sub").mkdir(parents=True)
        (d / "file.txt").write_bytes(b"x" * 1234)
        (d / ".hidden").write_text("h")
        (d / "to-sub").symlink_to(d / "sub")
        (d / "dangling").symlink_to(d / "nowhere")
        got = {e.name: (e.entry_type, e.size) for e in local_entries(d)}
        self.assertEqual(
            got,
            {
                "sub": (pb.Dir, 0),
                "file.txt": (pb.File, 1234),
                "to-sub": (pb.DirLink, 0),
                "dangling": (pb.FileLink, 0),
            },
        )
        self.assertIn(".hidden", {e.name for e in local_entries(d, include_hidden=True)})
        self.assertRaises(OSError, local_entries, d / "missing")


class ProgressTests(SynchronousTestCase):
    def test_bars_and_speed(self) -> None:
        """The bars follow the file and the total; the speed is over the last
        second or more (the average before a full second has passed)."""

        class Ev:
            def __init__(self, fd: int, fs: int, td: int, ts: int) -> None:
                self.name, self.file_done, self.file_size = "big.bin", fd, fs
                self.total_done, self.total_size = td, ts

        clock = Clock()
        m = TransferMeter(clock)
        m.start(True, "folder")
        clock.advance(0.5)
        m.update(Ev(1_000_000, 4_000_000, 1_000_000, 8_000_000))
        self.assertEqual((m.file_percent, m.total_percent), (25.0, 12.5))
        self.assertAlmostEqual(m.rate, 2e6)
        clock.advance(1.0)
        m.update(Ev(4_000_000, 4_000_000, 6_000_000, 8_000_000))
        self.assertAlmostEqual(m.rate, 4e6)  # 6 MB in the 1.5 s since the start
        clock.advance(0.5)
        m.update(Ev(1_000_000, 2_000_000, 7_000_000, 8_000_000))
        self.assertAlmostEqual(m.rate, 4e6)  # kept until a second has passed
        clock.advance(0.5)
        m.update(Ev(2_000_000, 2_000_000, 8_000_000, 8_000_000))
        self.assertAlmostEqual(m.rate, 2e6)  # 2 MB in the last second
        self.assertEqual(m.status_text(), "Uploading big.bin: 2.0 MB of 2.0 MB, 2.0 MB/s")
        m.start(False, "x")
        self.assertEqual((m.file_percent, m.rate), (100.0, 0.0))  # nothing to do yet

    def test_summary(self) -> None:
        """The status line after a run says what was copied, skipped (and how
        to overwrite), failed and cancelled."""
        run = RunSummary(copied=["a"], skipped=["b", "c", "d", "e"], resumed=2_000_000)
        self.assertEqual(
            run.text(),
            "1 copied (resumed after 2.0 MB); 4 skipped: exists (b, c, d …; "
            "tick Overwrite existing)",
        )
        run = RunSummary(failed=[("x", "outside the file root")], cancelled=True)
        self.assertIn("1 failed: x: outside the file root", run.text())
        self.assertIn("cancelled (the same action again resumes)", run.text())
        self.assertEqual(RunSummary().text(), "nothing to copy")

    @given(st.text(max_size=12))
    def test_port_fields(self, text: str) -> None:
        """A port field is a number 1-65535 or an error line that says so."""
        try:
            port = parse_port(text, "local port")
        except ValueError as e:
            self.assertEqual(str(e), "local port: give a number 1-65535")
        else:
            self.assertTrue(1 <= port <= 65535)
            self.assertEqual(port, int(text.strip()))


# -- the windows against a real host ------------------------------------------------------

_echo: list[int] = []


def echo_port() -> int:
    """A TCP echo server on 127.0.0.1 for this process (threads: it must answer
    whether or not a reactor runs), its port."""
    if _echo:
        return _echo[0]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    _echo.append(srv.getsockname()[1])
    return _echo[0]


def files_host(the_lab: Lab) -> tuple[str, Path]:
    """The lab's host with a file root (and the echo server allowed as a
    forward target): its id and the root."""
    root = (Path(the_lab.dir) / "file-root").resolve()
    root.mkdir(exist_ok=True)
    peer = the_lab.host(
        "window-files",
        "--file-root",
        str(root),
        "--allow-forward",
        f"127.0.0.1:{echo_port()}",
    )
    return peer, root


def route_args(the_lab: Lab, peer: str) -> argparse.Namespace:
    """How the window reaches C{peer}: as C{litedesk-viewer PEER --rendezvous
    ... --key ...} would."""
    return argparse.Namespace(
        target=peer,
        rendezvous=f"127.0.0.1:{the_lab.port}",
        key=the_lab.key,
        force_relay=False,
        known_hosts=None,
        websocket=False,
        ws_ca=None,
        timeout=20.0,
    )


def echo_through(port: int, payload: bytes) -> bytes:
    """Send C{payload} to 127.0.0.1:C{port} and read as much back (blocking:
    run it in a thread while the reactor runs the forwarder)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = s.recv(65536)
            if not data:
                break
            got += data
        return got


@requires(*WINDOW_NEEDS)
class TkCase(TestCase):
    """A Tk root on its own Xvfb in the test process, updated by the reactor
    every 5 ms as the viewer's tksupport does."""

    timeout = 180

    def setUp(self) -> None:
        # The process's shared Xvfb (stopped at exit); nothing here reads the screen.
        self.root = tk.Tk(screenName=shared_xvfb().display, className="LiteDeskTest")
        self.root.withdraw()
        pump = LoopingCall(self.root.update)
        pump.start(0.005)
        self.addCleanup(self.root.destroy)
        self.addCleanup(pump.stop)


class FilePaneTests(TkCase):
    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.builds(
                pb.FileEntry,
                entry_type=st.sampled_from([pb.Dir, pb.DirLink, pb.DirDrive, pb.File, pb.FileLink]),
                name=st.text(max_size=16),
                size=st.integers(0, 2**64 - 1),
                modified_time=st.integers(0, 2**64 - 1),
            ),
            max_size=30,
        )
    )
    def test_any_listing_from_the_host(self, entries: list[pb.FileEntry]) -> None:
        """Whatever a host lists (any names, sizes, times) the pane shows one row
        per distinct non-empty name, directories first, and selecting rows
        gives those names back."""

        class Side(LocalSide):
            def list_dir(self, path: str) -> Deferred[tuple[str, list[pb.FileEntry]]]:
                d: Deferred[tuple[str, list[pb.FileEntry]]] = Deferred()
                d.callback(("/host", entries))
                return d

        errors: list[str] = []
        pane = FilePane(self.root, "host", Side(), errors.append)
        pane.go("")
        names = list(dict.fromkeys(e.name for e in sorted_entries(entries) if e.name))
        self.assertEqual([pane._names[i] for i in pane.tree.get_children()], names)
        pane.select(names[::2])
        self.assertEqual(pane.selected(), names[::2])
        self.assertEqual(errors, [])
        pane.frame.destroy()


class FilesWindowTests(TkCase):
    """The Files window against the lab's host with a --file-root."""

    def setUp(self) -> None:
        super().setUp()
        self.lab = lab()
        self.peer, self.root_dir = files_host(self.lab)
        # Each test works in a directory of its own on both sides.
        self.remote_dir = self.root_dir / self.id().rsplit(".", 1)[-1]
        self.remote_dir.mkdir()
        self.local_dir = Path(self.mktemp()).resolve()
        self.local_dir.mkdir(parents=True)

    def open_window(self, peer: str | None = None) -> FilesWindow:
        args = route_args(self.lab, peer or self.peer)
        win = FilesWindow(
            self.root,
            reactor,
            args.target,
            PASSWORD,
            lambda s: connection.connect(reactor, args, s),
            local_dir=self.local_dir,
        )
        self.addCleanup(win.close)  # waits for the file session to close
        return win

    @inlineCallbacks
    def listed(self, win: FilesWindow, path: Path) -> Any:
        """Go to C{path} in the host pane (what Return in its path entry does)
        and wait for the listing."""
        yield until(lambda: win.remote_side.client is not None, 30, message="the file session")
        win.remote.path_var.set(str(path))
        win.remote.go(win.remote.path_var.get())
        yield until(lambda: win.remote.path == str(path), 15, message=f"the listing of {path}")

    @inlineCallbacks
    def finished(self, win: FilesWindow) -> Any:
        yield until(lambda: not win.busy(), 60, message="the transfers to end")
        return win.status_var.get()

    def rows(self, pane: FilePane) -> list[str]:
        return [str(pane.tree.item(i, "text")) for i in pane.tree.get_children()]

    @inlineCallbacks
    def test_host_pane_lists_the_file_root(self) -> Any:
        """Opened, the window logs in to the host's files and lists its root
        (folders first, with a slash); the local pane starts in the given
        directory; Up at the root goes nowhere."""
        (self.remote_dir / "b.txt").write_bytes(b"12345")
        (self.remote_dir / "a-folder").mkdir()
        (self.local_dir / "mine.txt").write_text("local")
        win = self.open_window()
        yield until(lambda: win.remote.path == str(self.root_dir), 30, message="the root listing")
        self.assertIn(f"{self.remote_dir.name}/", self.rows(win.remote))
        self.assertEqual(win.local.path, str(self.local_dir))
        self.assertEqual(self.rows(win.local), ["mine.txt"])
        win.remote.enter(self.remote_dir.name)
        yield until(lambda: win.remote.path == str(self.remote_dir), 15, message="entering")
        self.assertEqual(self.rows(win.remote), ["a-folder/", "b.txt"])
        self.assertEqual(
            win.remote.tree.item(win.remote.tree.get_children()[1], "values")[0], "5 B"
        )
        win.remote.go_up()
        yield until(lambda: win.remote.path == str(self.root_dir), 15, message="Up")
        win.remote.go_up()
        self.assertIn("is the top", win.status_var.get())

    @inlineCallbacks
    def test_upload_and_download(self) -> Any:
        """Upload copies the selected local file and folder into the host pane's
        directory, Download the selected host file into the local pane's;
        the copies are byte for byte the originals and both panes show them."""
        up = self.local_dir / "up.bin"
        up.write_bytes(os.urandom(3_000_000))
        folder = self.local_dir / "album"
        (folder / "inner").mkdir(parents=True)
        (folder / "one.dat").write_bytes(os.urandom(70_000))
        (folder / "inner" / "two.dat").write_bytes(b"two" * 1000)
        down = self.remote_dir / "down.bin"
        down.write_bytes(os.urandom(2_500_000))
        win = self.open_window()
        yield self.listed(win, self.remote_dir)
        yield win.local.refresh()
        win.local.select(["up.bin", "album"])
        win.upload_button.invoke()
        status = yield self.finished(win)
        self.assertEqual(status, "2 copied")
        self.assertEqual(sha256(self.remote_dir / "up.bin"), sha256(up))
        self.assertEqual(sha256(self.remote_dir / "album" / "one.dat"), sha256(folder / "one.dat"))
        self.assertEqual(
            (self.remote_dir / "album" / "inner" / "two.dat").read_bytes(), b"two" * 1000
        )
        yield until(
            lambda: "up.bin" in self.rows(win.remote), 10, message="the host pane refreshed"
        )
        win.remote.select(["down.bin"])
        win.download_button.invoke()
        status = yield self.finished(win)
        self.assertEqual(status, "1 copied")
        self.assertEqual(sha256(self.local_dir / "down.bin"), sha256(down))
        yield until(lambda: "down.bin" in self.rows(win.local), 10, message="the local pane")
        self.assertEqual(win.total_var.get(), 100.0)

    @inlineCallbacks
    def test_existing_file_skipped_unless_overwrite(self) -> Any:
        """Without "Overwrite existing" a file that exists on the host is left
        as it is and the status line says so; ticked, it is replaced."""
        (self.local_dir / "same.txt").write_text("new content")
        (self.remote_dir / "same.txt").write_text("old")
        win = self.open_window()
        yield self.listed(win, self.remote_dir)
        yield win.local.refresh()
        win.local.select(["same.txt"])
        win.upload_button.invoke()
        status = yield self.finished(win)
        self.assertIn("1 skipped: exists (same.txt; tick Overwrite existing)", status)
        self.assertEqual((self.remote_dir / "same.txt").read_text(), "old")
        win.overwrite_box.invoke()
        self.assertTrue(win.overwrite_var.get())
        win.upload_button.invoke()
        status = yield self.finished(win)
        self.assertEqual(status, "1 copied")
        self.assertEqual((self.remote_dir / "same.txt").read_text(), "new content")

    @inlineCallbacks
    def test_cancel_then_resume(self) -> Any:
        """Cancel stops a running download with a partial file left beside the
        target; pressing Download again resumes after it and ends with the
        whole file."""
        big = self.remote_dir / "big.bin"
        with big.open("wb") as f:
            for _ in range(96):
                f.write(os.urandom(1 << 20))
        win = self.open_window()
        yield self.listed(win, self.remote_dir)
        win.remote.select(["big.bin"])
        win.download_button.invoke()
        yield until(lambda: win.meter.file_done > 0, 30, message="the first bytes")
        self.assertEqual(str(win.cancel_button.cget("state")), "normal")
        win.cancel_button.invoke()
        status = yield self.finished(win)
        self.assertIn("cancelled (the same action again resumes)", status)
        self.assertFalse((self.local_dir / "big.bin").exists())
        partial = self.local_dir / "big.bin.download"
        self.assertTrue(partial.exists())
        kept = partial.stat().st_size
        self.assertGreater(kept, 0)
        win.download_button.invoke()
        status = yield self.finished(win)
        self.assertIn("1 copied (resumed after", status)
        self.assertEqual(sha256(self.local_dir / "big.bin"), sha256(big))
        self.assertFalse(partial.exists())

    @inlineCallbacks
    def test_outside_the_root(self) -> Any:
        """A host path outside the file root, typed in the host pane, is refused
        with the host's reason and the pane keeps showing where it was."""
        win = self.open_window()
        yield self.listed(win, self.remote_dir)
        win.remote.path_var.set("/")
        win.remote.go(win.remote.path_var.get())
        yield until(lambda: "cannot list /" in win.status_var.get(), 15, message="the refusal")
        self.assertIn("outside the file root", win.status_var.get())
        self.assertEqual(win.remote.path_var.get(), str(self.remote_dir))

    @inlineCallbacks
    def test_file_transfer_disabled(self) -> Any:
        """Against a host with --no-file-transfer the window says "file transfer
        disabled" in its status line and in a message window."""
        peer = self.lab.host("window-nofiles", "--no-file-transfer")
        win = self.open_window(peer)
        yield until(lambda: win._error is not None, 30, message="the error window")
        self.assertIn("file transfer disabled", win.status_var.get())
        self.assertIsNone(win.remote_side.client)
        win.upload_button.invoke()
        self.assertIn("Not connected to the host's files", win.status_var.get())


class ForwardDialogTests(TkCase):
    """The forward dialog against the lab's host with --allow-forward."""

    def setUp(self) -> None:
        super().setUp()
        self.lab = lab()
        self.peer, _ = files_host(self.lab)

    def dialog(self) -> ForwardDialog:
        d = ForwardDialog(self.root, reactor, route_args(self.lab, self.peer), PASSWORD)
        self.addCleanup(d.close)
        return d

    @inlineCallbacks
    def test_forward_to_echo_server(self) -> Any:
        """Start listens on the local port and shows where it forwards; a
        connection there reaches the echo server through the host and comes
        back; the counters show it; Stop stops listening."""
        d = self.dialog()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            lport = s.getsockname()[1]
        d.lport_var.set(str(lport))
        d.rport_var.set(str(echo_port()))
        d.start_button.invoke()
        want = f"listening on 127.0.0.1:{lport} -> 127.0.0.1:{echo_port()}"
        yield until(lambda: d.state_var.get() == want, 30, message=want)
        payload = os.urandom(200_000)
        got = yield deferToThread(echo_through, lport, payload)
        self.assertEqual(got, payload)
        yield until(lambda: d.counts_var.get().startswith("1 connection(s)"), 10, message="counts")
        self.assertEqual(d.error_var.get(), "")
        d.stop_button.invoke()
        self.assertEqual(d.state_var.get(), "Stopped")
        yield d.stopping
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", lport), timeout=5).close()

    @inlineCallbacks
    def test_target_not_allowed(self) -> Any:
        """A target the host does not list in --allow-forward: the dialog shows
        "forward not allowed", nothing listens, and Start can be pressed again."""
        d = self.dialog()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            lport = s.getsockname()[1]
        d.lport_var.set(str(lport))
        d.rport_var.set("9")  # discard: not allowed on this host
        d.start_button.invoke()
        yield until(lambda: d.error_var.get(), 30, message="the error")
        self.assertEqual(d.error_var.get(), "forward not allowed")
        self.assertEqual(d.state_var.get(), "Not forwarding")
        self.assertEqual(str(d.start_button.cget("state")), "normal")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", lport), timeout=5).close()

    def test_bad_port_typed(self) -> None:
        """A port that is not a number is reported in the dialog; nothing listens."""
        d = self.dialog()
        d.lport_var.set("http")
        d.rport_var.set("80")
        d.start_button.invoke()
        self.assertEqual(d.error_var.get(), "local port: give a number 1-65535")
        self.assertIsNone(d.forwarding)


@requires(*WINDOW_NEEDS)
class ViewerMenuTests(SynchronousTestCase):
    """The real viewer process: F8 -> Files... and F8 -> Forward a port..."""

    def test_menu_opens_files_and_forward(self) -> None:
        """F8 then "i" opens the Files window, which lists the host's file root;
        F8 then "p" opens the forward dialog, which forwards a connection once
        its fields are typed and Return pressed."""
        the_lab = lab()
        peer, root = files_host(the_lab)
        v, _ = _viewer(self, the_lab, peer, "--password", PASSWORD, "--force-relay")
        v.wait_log(r"Connected to ", timeout=30)
        start = len(v.text())
        v.menu("i")
        v.xdotool("search", "--sync", "--name", f"^Files: {peer} - LiteDesk$")
        v.wait_log(rf"Listed \d+ entries of {root}\n", start=start, timeout=30)
        # The Files window has the focus now; the host key works in the main one.
        main = v.xdotool("search", "--name", f"^{peer} - LiteDesk$").split()[0]
        v.xdotool("windowfocus", "--sync", main)
        v.menu("p")
        v.xdotool("search", "--sync", "--name", f"^Forward a port: {peer} - LiteDesk$")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            lport = s.getsockname()[1]
        # The local port field has the focus; the host field keeps 127.0.0.1.
        v.xdotool("type", "--delay", "40", str(lport))
        v.xdotool("key", "Tab", "Tab")
        v.xdotool("type", "--delay", "40", str(echo_port()))
        v.xdotool("key", "Return")
        v.wait_log(rf"Forwarding 127\.0\.0\.1:{lport} to 127\.0\.0\.1:{echo_port()}", timeout=15)
        got = wait_until(lambda: echo_through(lport, b"through the host"), 15, 0.2, "the echo")
        self.assertEqual(got, b"through the host")
