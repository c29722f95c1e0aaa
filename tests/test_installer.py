"""conf/install-server.sh, really executed: a staged (DESTDIR) install, an install
whose server then runs as a non-root service user, and the refusal of an
interpreter that user cannot execute.

The script is run as an operator runs it, with bash and no arguments but
C{--foreground}; only the paths move into a temporary directory (the
C{LITEDESK_*} variables it documents) so that nothing is installed into
/opt, /etc or /var.  Each run builds a real venv and pip-installs this checkout
into it (about 15 s).  The first C{python3} on PATH in every run is a stand-in
that fails, as a pyenv shim in root's 0700 home does for the service user: the
script must not pick it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz

from .support.ports import free_port_pair
from .support.skips import requires

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "conf" / "install-server.sh"
UNIT = REPO / "conf" / "litedesk-relay.service"

# A python3 that must never be used: the script's default is the distribution's
# interpreter, not the first one on PATH.
DECOY_PYTHON = "#!/bin/sh\necho 'decoy python3 on PATH was used' >&2\nexit 97\n"


class InstallerRun:
    """One temporary installation: its paths, environment and service user."""

    def __init__(self, case: SynchronousTestCase, user: str | None) -> None:
        # Under /tmp with mode 0755, not trial's temp directory: the service
        # user must be able to reach the venv and the data directory, and the
        # checkout's parents may not be searchable by other users.
        self.root = Path(tempfile.mkdtemp(prefix="litedesk-install-"))
        self.root.chmod(0o755)
        case.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.user = user
        if user is not None:
            case.addCleanup(self._remove_user, user)
        decoy = self.root / "decoy-bin"
        decoy.mkdir()
        (decoy / "python3").write_text(DECOY_PYTHON)
        (decoy / "python3").chmod(0o755)
        self.venv = self.root / "venv"
        self.data = self.root / "data"
        self.conf = self.root / "etc" / "relay.conf"
        self.unit = self.root / "systemd" / "litedesk-relay.service"
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if "/.venv/" not in p]
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LITEDESK_", "DESTDIR"))
        }
        self.env["PATH"] = os.pathsep.join([str(decoy), *path])
        if user is not None:
            self.env.update(
                LITEDESK_USER=user,
                LITEDESK_VENV=str(self.venv),
                LITEDESK_DATA=str(self.data),
                LITEDESK_CONF=str(self.conf),
                LITEDESK_UNIT=str(self.unit),
            )

    @staticmethod
    def _remove_user(user: str) -> None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return
        subprocess.run(["userdel", user], check=False, capture_output=True)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=self.root,
        )


def _failed(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _service_user_name(tag: str) -> str:
    # Unique per run and short (useradd allows 32 characters).
    return f"ldt{tag}{os.getpid() % 100000}{os.urandom(2).hex()}"


def _rendezvous_answers(port: int, deadline: float) -> bytes:
    """The server's answer to a RegisterPeer datagram, polled until C{deadline}."""
    probe = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="123456789")).SerializeToString()
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(probe, ("127.0.0.1", port))
            return s.recvfrom(65536)[0]
        except OSError:
            if time.monotonic() > deadline:
                raise
        finally:
            s.close()


class StagedInstallTests(SynchronousTestCase):
    def test_destdir_run_stages_a_working_install(self) -> None:
        """DESTDIR=... stages venv, configuration and unit under that directory: the
        venv is built on /usr/bin/python3 although another python3 comes first on
        PATH, its twistd runs the plugin, and the configuration and unit are the
        shipped ones at their default paths."""
        run = InstallerRun(self, user=None)
        dest = run.root / "stage"
        proc = run.run(DESTDIR=str(dest))
        self.assertEqual(proc.returncode, 0, _failed(proc))
        self.assertNotIn("decoy", proc.stderr)
        cfg = (dest / "opt/litedesk/pyvenv.cfg").read_text()
        self.assertIn("home = /usr/bin\n", cfg)
        self.assertEqual(
            (dest / "etc/systemd/system/litedesk-relay.service").read_text(), UNIT.read_text()
        )
        conf = (dest / "etc/litedesk/relay.conf").read_text()
        self.assertIn("\ndata-dir = /var/lib/litedesk\n", conf)
        self.assertEqual(stat.S_IMODE((dest / "var/lib/litedesk").stat().st_mode), 0o700)
        # In the installer's environment, as the service runs it: trial -j hands
        # its workers a PYTHONPATH of this interpreter's library, which the staged
        # venv's /usr/bin/python3 must not load (another build's _ssl, say).
        helped = subprocess.run(
            [str(dest / "opt/litedesk/bin/twistd"), "litedesk-relay", "--help"],
            env=run.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(helped.returncode, 0, _failed(helped))
        self.assertIn("--relay-read-mode", helped.stdout)


# The script creates a system user and runs the server with runuser.
@requires("root")
class ServiceUserTests(SynchronousTestCase):
    def test_server_runs_as_the_service_user(self) -> None:
        """The case that failed: a venv left by an earlier run on an interpreter the
        service user cannot execute.  Run again with the defaults, the script
        rebuilds the venv on /usr/bin/python3, creates the service user, writes
        the unit with the paths in use, and --foreground starts a server that
        answers a RegisterPeer and owns its key files."""
        run = InstallerRun(self, user=_service_user_name("s"))
        assert run.user is not None
        # The broken venv the old script built: based on an interpreter inside a
        # directory only root may enter.
        private = run.root / "root-home"
        (private / "bin").mkdir(parents=True)
        private.chmod(0o700)
        (private / "bin" / "python3").symlink_to("/usr/bin/python3")
        subprocess.run(
            [str(private / "bin" / "python3"), "-m", "venv", "--without-pip", str(run.venv)],
            check=True,
            timeout=60,
        )
        port = free_port_pair()
        run.conf.parent.mkdir()
        run.conf.write_text(f"data-dir = {run.data}\nport = {port}\ninterface = 127.0.0.1\n")
        log = run.root / "foreground.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                ["bash", str(SCRIPT), "--foreground"],
                env=run.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=run.root,
                start_new_session=True,
            )
        self.addCleanup(self._stop, server)
        deadline = time.monotonic() + 180
        while server.poll() is None and not (run.data / "id_ed25519.pub").exists():
            if time.monotonic() > deadline:
                self.fail("no key file after 180 s:\n" + log.read_text())
            time.sleep(0.2)
        self.assertIsNone(server.poll(), log.read_text())
        answer = rz.RendezvousMessage.FromString(_rendezvous_answers(port, time.monotonic() + 20))
        self.assertTrue(answer.register_peer_response.request_pk)

        text = log.read_text()
        self.assertIn("rebuilding it with /usr/bin/python3", text)
        self.assertIn("Client settings", text)
        self.assertIn("home = /usr/bin\n", (run.venv / "pyvenv.cfg").read_text())
        uid = pwd.getpwnam(run.user).pw_uid
        self.assertNotEqual(uid, 0)
        for name in ("id_ed25519", "db_v2.sqlite3"):
            st = (run.data / name).stat()
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (uid, 0o600), name)
        unit = run.unit.read_text()
        self.assertIn(f"\nUser={run.user}\n", unit)
        self.assertIn(f"\nExecStart={run.venv}/bin/twistd ", unit)
        self.assertIn(f"--config {run.conf}\n", unit)
        self.assertIn(f"\nReadWritePaths={run.data}\n", unit)

        # Ctrl-C / SIGTERM stops the server cleanly; runuser then ends by the
        # same signal.
        server.send_signal(signal.SIGTERM)
        self.assertIn(server.wait(30), (0, -signal.SIGTERM), log.read_text())
        self.assertIn("Server Shut Down.", log.read_text())

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def test_interpreter_the_service_user_cannot_run_is_refused(self) -> None:
        """PYTHON= an interpreter inside a 0700 directory (a pyenv build in root's
        home): the script stops right after building the venv, says that the
        service user cannot run it and how to fix it, and installs no unit and no
        configuration."""
        run = InstallerRun(self, user=_service_user_name("r"))
        private = run.root / "root-home"
        (private / "bin").mkdir(parents=True)
        private.chmod(0o700)
        (private / "bin" / "python3").symlink_to("/usr/bin/python3")
        proc = run.run(PYTHON=str(private / "bin" / "python3"))
        self.assertEqual(proc.returncode, 1, _failed(proc))
        self.assertIn(f"the service user {run.user} cannot run {run.venv}/bin/python", proc.stderr)
        self.assertIn("Permission denied", proc.stderr)
        self.assertIn("PYTHON=/usr/bin/python3 bash", proc.stderr)
        self.assertIn("Nothing was enabled or started.", proc.stderr)
        self.assertFalse(run.unit.exists())
        self.assertFalse(run.conf.exists())
        self.assertFalse((run.venv / "bin" / "twistd").exists())
