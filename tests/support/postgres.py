"""A throwaway PostgreSQL cluster from Debian's packages, for the PostgreSQL store's tests.

C{initdb} and C{pg_ctl} from C{/usr/lib/postgresql/*/bin} (the newest one
installed; CI installs C{postgresql} through tests/apt-packages.txt) make a
cluster in a private directory under the system's temp dir, listening on a
free loopback port and on a Unix socket in that directory, with password
(SCRAM) authentication over TCP so that the tests use URLs with a password
as operators do.  PostgreSQL refuses to run as root, and CI runs as root:
then the cluster belongs to the C{postgres} user Debian's package creates
and every command runs through C{runuser}.  fsync stays on (the tests kill
servers and expect acknowledged rows to be there).

The cluster lab (L{tests.support.cluster_lab}) starts its own cluster
inside a network namespace, listening on a lab address, with password
access from the lab's subnet; the test process, outside that namespace,
administers it over the Unix socket (a file, shared by every namespace).

Starting a cluster takes seconds, so a test process shares one
(L{shared_cluster}), stopped and removed when the process exits, and each
test gets a database of its own (L{fresh_database}), dropped in its cleanup.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .ports import free_port

__all__ = ["PostgresCluster", "fresh_database", "pg_bin", "shared_cluster"]

USER = "litedesk"
PASSWORD = "s3cret-Pw!"


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory.

    @raise RuntimeError: no PostgreSQL is installed (tests fail, never skip).
    """
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresCluster:
    """One running cluster; L{stop} removes it.

    @ivar port: its TCP port.
    @ivar admin_url: a URL for the superuser C{litedesk} (with its password over
        TCP; over the Unix socket when the server runs in a namespace).

    @param listen: the address the server listens on (it must exist where
        the server runs).
    @param clients: a network (CIDR) whose clients may connect over TCP with
        the password, besides loopback.
    @param netns: run the server in this network namespace (C{ip netns exec}).
    """

    def __init__(
        self, listen: str = "127.0.0.1", clients: str | None = None, netns: str | None = None
    ) -> None:
        self._bin = pg_bin()
        self.listen = listen
        self.netns = netns
        self._as: list[str] = ["ip", "netns", "exec", netns] if netns else []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            self._as += ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="litedesk-pg-"))
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self._started = False
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            # Not syncing the new cluster's files saves seconds per start; the
            # server itself runs with fsync on, which is what the tests rely on.
            "--no-sync",
        )
        pwfile.unlink()
        conf = (
            f"listen_addresses = '{listen}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\nmax_connections = 50\n"
            "shared_buffers = 32MB\nfsync = on\nsynchronous_commit = on\n"
        )
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(conf)
        if clients is not None:
            with (self.data / "pg_hba.conf").open("a") as f:
                f.write(f"host all all {clients} scram-sha-256\n")
        self.start()
        self.admin_url = self.socket_url("postgres") if netns else self.url("postgres")

    def start(self) -> None:
        """Start the server (again)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")
        self._started = True

    def halt(self) -> None:
        """Stop the server at once, as a crash would (the cluster stays)."""
        self._started = False
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as, str(self._bin / tool), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}{tail}")

    def url(self, database: str) -> str:
        """A URL with the password for C{database} on this cluster."""
        return f"postgresql://{USER}:{PASSWORD}@{self.listen}:{self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """A URL for C{database} over the cluster's Unix socket (trusted, no password)."""
        return (
            f"postgresql://{USER}@/{database}?host={quote(str(self.dir), safe='')}&port={self.port}"
        )

    def create_database(self, name: str) -> str:
        """Create database C{name}; returns its URL."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server immediately and remove the cluster's directory."""
        try:
            if self._started:
                self.halt()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_shared: PostgresCluster | None = None
_names = itertools.count(1)


def shared_cluster() -> PostgresCluster:
    """This process's cluster, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        _shared = PostgresCluster()
        atexit.register(_shared.stop)
    return _shared


def fresh_database(case: Any) -> str:
    """A new empty database on the shared cluster for test C{case}; its URL.

    The database is dropped in C{case}'s cleanup (connections still open to
    it, such as a killed server's, are ended first).
    """
    import psycopg

    cluster = shared_cluster()
    name = f"t{os.getpid()}_{next(_names)}"
    url = cluster.create_database(name)

    def drop() -> None:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    case.addCleanup(drop)
    return url
