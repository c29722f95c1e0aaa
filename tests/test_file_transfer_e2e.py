"""File transfer end to end: server, relay, host agents and the headless viewer.

Real processes on loopback (L{tests.support.e2e_lab}); the hosts get a
C{--file-root}.  Covers what a person moving files would notice: 64 MiB up
and down arrive intact (SHA-256) on the direct path and through the relay,
C{--ls} lists in the order given with C{--stats-json}, paths that lead out
of the file root (C{..}, a symbolic link) are refused, an existing file is
only replaced with C{--overwrite}, a download killed in mid-transfer
resumes from its partial, a full disk on the host ends the upload with the
reason and leaves no partial, and hosts without file transfer
(C{--no-file-transfer}, C{--view-only}) say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .support.e2e_lab import NEEDS, VIEWER, lab
from .support.polling import wait_until
from .support.skips import requires

MIB = 1024 * 1024
BIG = 64 * MIB
TRANSFER_TIMEOUT = 300.0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n
    return path


def file_root(name: str) -> Path:
    """The file root of the lab's host C{name} (one per lab, shared by tests)."""
    root = lab().dir / f"root-{name}"
    root.mkdir(exist_ok=True)
    return root


def files_host(name: str = "files") -> str:
    return lab().host(name, "--file-root", str(file_root(name)))


@requires(*NEEDS, "root")
class FileTransferEndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lab = lab()
        self.tmp = Path(self.mktemp()).absolute()
        self.tmp.mkdir(parents=True)

    def viewer(self, peer: str, *args: str, timeout: float = 60) -> Any:
        return self.lab.viewer(peer, *args, timeout=timeout)

    def ok(self, result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        self.assertEqual(result.returncode, 0, f"viewer failed: {result.stderr}")
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}

    def refused(self, result: subprocess.CompletedProcess[str], reason: str) -> str:
        self.assertEqual(result.returncode, 1, f"viewer should fail: {result.stdout}")
        last = result.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("litedesk-viewer: "), last)
        self.assertIn(reason, last)
        return last

    def round_trip(self, *path_args: str, expected_path: str) -> None:
        peer = files_host()
        root = file_root("files")
        name = f"big-{expected_path}.bin"
        src = random_file(self.tmp / "src.bin", BIG)
        up = self.ok(
            self.viewer(
                peer,
                *path_args,
                "--upload",
                str(src),
                name,
                "--stats-json",
                timeout=TRANSFER_TIMEOUT,
            )
        )
        self.assertEqual(up["path"], expected_path)
        self.assertEqual(up["transfers"][0]["direction"], "upload")
        self.assertEqual(up["transfers"][0]["bytes"], BIG)
        self.assertEqual(sha256(root / name), sha256(src))
        back = self.tmp / "back.bin"
        down = self.ok(
            self.viewer(
                peer,
                *path_args,
                "--download",
                name,
                str(back),
                "--stats-json",
                timeout=TRANSFER_TIMEOUT,
            )
        )
        self.assertEqual(down["transfers"][0]["bytes"], BIG)
        self.assertEqual(sha256(back), sha256(src))
        self.assertEqual(list(self.tmp.glob("*.download")), [])

    def test_64_mib_both_ways_direct(self) -> None:
        """64 MiB up and back down on the direct (LAN) path arrive unchanged."""
        self.round_trip(expected_path="lan")

    def test_64_mib_both_ways_relay(self) -> None:
        """The same through the relay."""
        self.round_trip("--force-relay", expected_path="relay")

    def test_ls_in_order_as_json(self) -> None:
        """--ls lists each path, in the order given, in the stats JSON."""
        peer = files_host()
        d = file_root("files") / "lsdir"
        (d / "sub").mkdir(parents=True, exist_ok=True)
        (d / "hello.txt").write_bytes(b"hello world")
        stats = self.ok(self.viewer(peer, "--ls", "lsdir", "--ls", "lsdir/sub", "--stats-json"))
        self.assertEqual(
            [x["path"].rstrip("/").rsplit("/", 1)[-1] for x in stats["ls"]], ["lsdir", "sub"]
        )
        entries = {e["name"]: e for e in stats["ls"][0]["entries"]}
        self.assertEqual(entries["hello.txt"]["size"], 11)
        self.assertFalse(entries["hello.txt"]["is_dir"])
        self.assertTrue(entries["sub"]["is_dir"])
        self.assertEqual(stats["ls"][1]["entries"], [])
        self.assertIn(stats["protocol"], ("litedesk-tls", "rustdesk"))
        plain = self.viewer(peer, "--ls", "lsdir")
        self.assertEqual(plain.returncode, 0, plain.stderr)
        line = next(x for x in plain.stdout.splitlines() if x.endswith("hello.txt"))
        self.assertTrue(line.startswith("file\t11\t"), line)

    def test_outside_the_root_refused(self) -> None:
        """'..' and a symbolic link that leads out are refused; nothing is copied."""
        peer = files_host()
        root = file_root("files")
        with contextlib.suppress(FileExistsError):
            (root / "escape").symlink_to("/etc")
        for remote in ("../../etc/passwd", "escape/passwd", "/etc/passwd"):
            out = self.tmp / "passwd"
            self.refused(self.viewer(peer, "--download", remote, str(out)), "outside the file root")
            self.assertFalse(out.exists())
        src = self.tmp / "x.txt"
        src.write_text("x")
        self.refused(
            self.viewer(peer, "--upload", str(src), "escape/x.txt"), "outside the file root"
        )
        self.assertFalse(Path("/etc/x.txt").exists())

    def test_overwrite_needs_the_option(self) -> None:
        """An existing file is only replaced with --overwrite, both ways."""
        peer = files_host()
        root = file_root("files")
        src = self.tmp / "ow.txt"
        src.write_text("first")
        self.ok(self.viewer(peer, "--upload", str(src), "ow.txt"))
        self.assertEqual((root / "ow.txt").read_text(), "first")
        src.write_text("second version")
        self.refused(
            self.viewer(peer, "--upload", str(src), "ow.txt"),
            "exists on the host (use --overwrite)",
        )
        self.assertEqual((root / "ow.txt").read_text(), "first")
        self.ok(self.viewer(peer, "--upload", str(src), "ow.txt", "--overwrite"))
        self.assertEqual((root / "ow.txt").read_text(), "second version")
        local = self.tmp / "local.txt"
        local.write_text("mine")
        self.refused(self.viewer(peer, "--download", "ow.txt", str(local)), "use --overwrite")
        self.assertEqual(local.read_text(), "mine")
        self.ok(self.viewer(peer, "--download", "ow.txt", str(local), "--overwrite"))
        self.assertEqual(local.read_text(), "second version")

    def test_killed_download_resumes(self) -> None:
        """A viewer killed mid-download leaves a partial the next run continues."""
        peer = files_host()
        size = BIG  # through the lab's recording relay: seconds, time enough to kill it
        src = random_file(file_root("files") / "resume.bin", size)
        target = self.tmp / "resume.bin"
        partial = Path(str(target) + ".download")
        argv = [
            *VIEWER, peer, "--rendezvous", f"127.0.0.1:{self.lab.port}", "--key", self.lab.key,
            "--password", "e2e-password", "--headless", "--force-relay",
            "--download", "resume.bin", str(target),
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, env=self.lab.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(
                lambda: partial.exists() and partial.stat().st_size > 0,
                60,
                0.005,
                "the download to start",
            )
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        had = partial.stat().st_size
        self.assertLess(had, size, "the download finished before it could be killed")
        self.assertFalse(target.exists())
        stats = self.ok(
            self.viewer(
                peer, "--download", "resume.bin", str(target), "--stats-json",
                timeout=TRANSFER_TIMEOUT,
            )
        )  # fmt: skip
        t = stats["transfers"][0]
        self.assertGreater(t["resumed"], 0)
        self.assertLess(t["bytes"], size)
        self.assertEqual(t["bytes"] + t["resumed"], size)
        self.assertEqual(sha256(target), sha256(src))
        self.assertFalse(partial.exists())

    def test_full_disk_on_host(self) -> None:
        """An upload larger than the host's free space fails with the reason and
        leaves no partial on the host."""
        mnt = self.lab.dir / "tmpfs-root"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", str(mnt)], check=False)
        peer = self.lab.host("full", "--file-root", str(mnt))
        src = random_file(self.tmp / "big.bin", 8 * MIB)
        self.refused(self.viewer(peer, "--upload", str(src), "big.bin"), "space")
        wait_until(
            lambda: not list(mnt.glob("*.download")), 5, 0.1, "the host to remove its partial"
        )
        self.assertFalse((mnt / "big.bin").exists())

    def test_hosts_without_file_transfer(self) -> None:
        """--no-file-transfer and --view-only hosts refuse the session."""
        for name, option in (("nofiles", "--no-file-transfer"), ("viewonly", "--view-only")):
            peer = self.lab.host(name, option)
            self.refused(self.viewer(peer, "--ls", ""), "file transfer disabled")
