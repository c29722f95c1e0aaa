#!/usr/bin/env python
"""Transfer benchmark: LiteDesk file transfer and port forwarding against scp and ssh -L.

Usage::

    .venv/bin/python bench/transfer.py              # 1 GiB, best of 3 rounds: ~4 minutes
    .venv/bin/python bench/transfer.py --quick      # 256 MiB, 1 round: ~45 s
    .venv/bin/python bench/transfer.py --references # scp, relay-raw, ssh-forward only
    .venv/bin/python bench/transfer.py --only files --only scp --json out.json --keep

Needs Linux (/proc), Xvfb (the host agent's display) and, beyond
tests/apt-packages.txt, ``apt-get install -y openssh-server openssh-client
curl``; the script checks and says so, it installs nothing.  Everything runs
on loopback in a temporary directory (``--keep`` keeps it with every log; it
is kept anyway when a run fails); every child process is stopped on exit,
also on Ctrl-C or SIGTERM, and dies with this process otherwise.

One file of random bytes (1 GiB; ``--quick`` 256 MiB; ``--size-mib``) is
made once.  Each round measures, references next to what they reference so
that load from other work hits both alike (MB = 10**6 bytes):

``scp`` / ``files`` (part 1)
    the file uploaded and downloaded with OpenSSH's scp to a private sshd
    on 127.0.0.1 (see bench/transfer_lab.py), and with ``litedesk-viewer
    --upload`` / ``--download`` directly (path lan or punch) and through the
    relay (``--force-relay``).  LiteDesk: the transfer's own seconds from
    the ``"transfers"`` of ``--stats-json`` when it reports them, else the
    command's wall time minus its ``connect_time``.  scp: its wall time over
    an ssh connection opened beforehand (``ControlMaster``), so neither side
    counts its connection and login.  Every copy is SHA-256 checked and
    removed.  Goals: >= 0.6 x scp directly, >= 0.5 x scp through the relay.
``relay-raw``
    the same number of bytes through the same LiteDesk relay between two
    plain sockets paired by ``RequestRelay`` (as bench/relay.py pairs them),
    for context: the ceiling of the relay rows.
``ssh-forward`` / ``forward`` (part 2)
    an HTTP download of the file from ``python -m http.server`` with
    ``curl -o /dev/null`` (its ``speed_download``: bytes over the whole
    request, connection set-up included): directly (the ceiling), through
    ``ssh -N -L``, and through ``litedesk-viewer --forward`` (one session per
    connection, so the session's set-up is inside the figure), directly and
    through the relay.  The viewer opens its first session when it starts
    (bench/transfer.py waits for its listening socket) and hands it to the
    first connection, as ``ssh -L`` has its connection before curl starts.
    Goal: >= 0.5 x ssh -L.
memory (part 3)
    VmRSS of the host agent and of the viewer every 0.2 s during every
    LiteDesk transfer: start, peak and end, and the growth (host: peak minus
    its RSS before the command; viewer: peak minus the peak of the same
    command moving an 8 MiB file, as interpreter and imports are not the
    transfer's) as a fraction of the file size.  Goal: growth < 64 MiB.

Each figure is the best of ``--rounds`` rounds (throughput on a shared
machine is only ever lowered by noise), printed with its ratio to the
reference's best round and, round by round, to the reference of the same
round; every round is in ``--json``.  The last run's figures are in
bench/README.rst.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The repository (litedesk, tests.support) and this directory (the helper modules).
for _dir in (Path(__file__).resolve().parent.parent, Path(__file__).resolve().parent):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from procfs import cpu_seconds, rss_bytes  # noqa: E402
from transfer_figures import (  # noqa: E402
    MIB,
    Run,
    curl_download,
    memory_figures,
    relay_raw,
    report,
    resumed_bytes,
    sha256_file,
    transfer_seconds,
)
from transfer_lab import (  # noqa: E402
    APT_HINT,
    SFTP_SERVER,
    SSHD,
    LiteDesk,
    Processes,
    RssSampler,
    Sshd,
    listening,
    missing_tools,
    wait_for,
)

from tests.support.ports import free_port  # noqa: E402
from tests.support.xvfb import Xvfb  # noqa: E402

PARTS = ("scp", "files", "relay-raw", "ssh-forward", "forward")
REFERENCES = ("scp", "relay-raw", "ssh-forward")
WARMUP_SIZE = 8 * MIB
SRC = "src.bin"


class Bench:
    """One run: the processes, the file, and every L{Run} measured, by name."""

    def __init__(self, args: argparse.Namespace, parts: set[str]) -> None:
        self.parts = parts
        self.size = (args.size_mib or (256 if args.quick else 1024)) * MIB
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.workdir = Path(tempfile.mkdtemp(prefix="litedesk-transfer-"))
        self.data = self.workdir / "data"
        self.root = self.workdir / "file-root"
        self.local = self.workdir / "local"
        self.procs = Processes(self.workdir)
        self.sshd: Sshd | None = None
        self.lab: LiteDesk | None = None
        self.xvfb: Xvfb | None = None
        self.http_port = 0
        self.sha = ""
        self.info: dict[str, Any] = {"size_bytes": self.size, "rounds": self.rounds}
        self.runs: dict[str, list[Run]] = {}
        self.broken: dict[str, str] = {}  # LiteDesk path -> why its warm-up failed
        self.viewer_base: dict[str, int] = {}  # "direct upload" -> the warm-up's peak RSS
        # A generous bound for one command: 5 MB/s plus two minutes.
        self.timeout = 120 + self.size / 5e6

    # -- set-up ------------------------------------------------------------------

    def setup(self) -> None:
        for d in (self.data, self.root, self.local):
            d.mkdir()
        t0 = time.monotonic()
        self.sha = make_file(self.data / SRC, self.size)
        make_file(self.data / "warm.bin", WARMUP_SIZE)
        for name in (SRC, "warm.bin"):  # the host serves the same file, not a copy
            os.link(self.data / name, self.root / name)
        print(f"made {self.size / MIB:.0f} MiB of random bytes in {time.monotonic() - t0:.1f} s")
        if self.parts & {"scp", "ssh-forward"}:
            self.sshd = Sshd(self.workdir, self.procs)
            self.sshd.start()
            self.info["ssh_cipher"] = self.sshd.cipher()
            self.info["ssh_setup_s"] = self.sshd.setup_seconds()
            self.sshd.open_master()
            print(
                f"sshd on 127.0.0.1:{self.sshd.port}; cipher {self.info['ssh_cipher']}; "
                f"ssh connect + login {self.info['ssh_setup_s'] * 1000:.0f} ms"
            )
        if self.parts & {"ssh-forward", "forward"}:
            self.http_port = free_port()
            argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
            argv += ["--directory", str(self.data), str(self.http_port)]
            self.procs.spawn("http", argv, dict(os.environ))
            wait_for(lambda: listening(self.http_port), 20, "the HTTP server")
        if self.parts & {"files", "relay-raw", "forward"}:
            self.lab = LiteDesk(self.workdir, self.procs)
            self.lab.start_server()
        if self.parts & {"files", "forward"}:
            assert self.lab is not None
            self.xvfb = Xvfb(1280, 720, 24).start()
            assert self.xvfb.display is not None
            self.lab.start_host(self.xvfb.display, self.root, self.http_port or 9)

    # -- the rounds --------------------------------------------------------------

    def run(self) -> None:
        for rnd in range(1, self.rounds + 1):
            print(f"# round {rnd} of {self.rounds}", flush=True)
            for upload in (True, False):
                if "scp" in self.parts:
                    self.record(self.scp(upload))
                if "files" in self.parts:
                    for relay in (False, True):
                        self.record(self.litedesk_file(upload, relay))
            if "relay-raw" in self.parts:
                assert self.lab is not None
                self.record(relay_raw(self.lab.relay_port, self.lab.key, self.size))
            if "ssh-forward" in self.parts:
                self.record(curl_download("http direct", self.http_port, self.size))
                self.record(self.ssh_forward())
            if "forward" in self.parts:
                for relay in (False, True):
                    self.record(self.litedesk_forward(relay))

    def record(self, run: Run) -> None:
        self.runs.setdefault(run.name, []).append(run)
        print(f"  {run.brief()}", flush=True)

    def scp(self, upload: bool) -> Run:
        assert self.sshd is not None
        name = f"scp {'upload' if upload else 'download'}"
        target = (self.root if upload else self.local) / "copy.bin"
        if upload:
            argv = self.sshd.scp(str(self.data / SRC), "remote:" + str(target))
        else:
            argv = self.sshd.scp("remote:" + str(self.root / SRC), str(target))
        clear(target)
        t0 = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        wall = time.monotonic() - t0
        if out.returncode != 0:
            return Run(name, False, error=out.stderr[-500:])
        run = Run(name, True, seconds=wall, timing="wall, on the open ssh connection")
        return self.checked(run, target)

    def checked(self, run: Run, path: Path) -> Run:
        """C{run} with its throughput, or failed if C{path} is not the file; C{path} removed."""
        if path.is_dir():  # a destination taken as a directory
            path = path / SRC
        if not path.is_file() or sha256_file(path) != self.sha:
            size = path.stat().st_size if path.is_file() else None
            run.ok, run.error = False, f"SHA-256 mismatch or no file at {path} (size {size})"
        elif run.seconds:
            run.mbps = self.size / run.seconds / 1e6
        clear(path)
        return run

    def litedesk_file(self, upload: bool, relay: bool, warmup: bool = False) -> Run:
        path = "relay" if relay else "direct"
        kind = f"{path} {'upload' if upload else 'download'}"
        name = f"litedesk {kind}" + (" (8 MiB warm-up)" if warmup else "")
        if not warmup and kind not in self.viewer_base and path not in self.broken:
            warm = self.litedesk_file(upload, relay, warmup=True)
            if warm.ok:
                self.viewer_base[kind] = int(warm.memory["viewer"]["peak"])
            else:
                self.broken[path] = f"warm-up failed: {warm.error}"
        if path in self.broken:
            return Run(name, False, error=self.broken[path])
        src = "warm.bin" if warmup else SRC
        target = (self.root if upload else self.local) / "copy.bin"
        clear(target)
        if upload:
            extra = ["--upload", str(self.data / src), target.name]
        else:
            extra = ["--download", src, str(target)]
        assert self.lab is not None
        run = self.viewer_command(name, self.lab.viewer(*extra, relay=relay), kind)
        if not run.ok:
            clear(target)
            return run
        if warmup:
            run.ok = target.is_file() and target.stat().st_size == WARMUP_SIZE
            clear(target)
            return run
        return self.checked(run, target)

    def viewer_command(self, name: str, argv: list[str], kind: str) -> Run:
        """Run one viewer command with the host's and its own RSS sampled."""
        assert self.lab is not None and self.lab.host is not None
        host_pid = self.lab.host.pid
        host_start = rss_bytes(host_pid) or 0
        host_cpu, children = cpu_seconds(host_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        sampler = RssSampler({"host": host_pid, "viewer": proc.pid}).start()
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        except BaseException:  # Ctrl-C, SIGTERM: the viewer goes too
            proc.kill()
            proc.wait()
            raise
        finally:
            samples = sampler.stop()
        wall = time.monotonic() - t0
        # The viewer is the only child reaped meanwhile: its CPU is the children's growth.
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        info: dict[str, Any] = {
            "wall_s": wall,
            "host_cpu_s": cpu_seconds(host_pid) - host_cpu,
            "viewer_cpu_s": after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime,
        }
        memory = memory_figures(samples, host_start, self.viewer_base.get(kind), self.size)
        stats = last_json(stdout.decode(errors="replace"))
        if proc.returncode != 0 or stats is None:
            err = stderr.decode(errors="replace").strip()[-500:] or f"exit {proc.returncode}"
            return Run(name, False, error=err, memory=memory, info=info)
        seconds, timing = transfer_seconds(stats, wall)
        info["stats"] = stats
        if resumed_bytes(stats):  # not every byte moved: the figure would flatter
            error = f"resumed {resumed_bytes(stats)} bytes from a partial file"
            return Run(name, False, error=error, info=info, memory=memory)
        return Run(name, True, seconds=seconds, timing=timing, info=info, memory=memory)

    def ssh_forward(self) -> Run:
        assert self.sshd is not None
        lport = free_port()
        spec = f"{lport}:127.0.0.1:{self.http_port}"
        argv = self.sshd.ssh("-N", "-o", "ExitOnForwardFailure=yes", "-L", spec)
        proc = self.procs.spawn("ssh-L", argv, dict(os.environ))
        try:
            wait_for(lambda: listening(lport) or proc.poll() is not None, 20, "ssh -L")
            if proc.poll() is not None:
                return Run("ssh -L", False, error=f"ssh exited {proc.returncode}")
            return curl_download("ssh -L", lport, self.size)
        finally:
            self.procs.stop(proc)

    def litedesk_forward(self, relay: bool) -> Run:
        assert self.lab is not None and self.lab.host is not None
        name = f"litedesk forward {'relay' if relay else 'direct'}"
        lport = free_port()
        spec = f"{lport}:127.0.0.1:{self.http_port}"
        argv = self.lab.viewer("--forward", spec, "--duration", f"{self.timeout:.0f}", relay=relay)
        proc = self.procs.spawn(name.replace(" ", "-"), argv, dict(os.environ))
        try:
            wait_for(lambda: listening(lport) or proc.poll() is not None, 60, name)
            if proc.poll() is not None:
                log = (self.workdir / f"{name.replace(' ', '-')}.out").read_text()
                return Run(name, False, error=log.strip()[-500:] or f"exit {proc.returncode}")
            host_start = rss_bytes(self.lab.host.pid) or 0
            sampler = RssSampler({"host": self.lab.host.pid, "viewer": proc.pid}).start()
            try:
                run = curl_download(name, lport, self.size, self.timeout)
            finally:
                samples = sampler.stop()
            run.memory = memory_figures(samples, host_start, None, self.size)
            return run
        finally:
            self.procs.stop(proc)

    def stop(self) -> None:
        self.procs.stop_all()
        if self.xvfb is not None:
            self.xvfb.stop()
        if self.sshd is not None:
            self.sshd.cleanup()


def make_file(path: Path, size: int) -> str:
    """C{size} random bytes at C{path}; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def clear(path: Path) -> None:
    """Remove C{path} and the partial files a transfer may leave beside it (C{.download},
    C{.digest}): a later transfer would resume from them instead of moving every byte."""
    for p in [path, *path.parent.glob(path.name + ".*")]:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    os.sync()  # the last copy's dirty pages are written before the next clock starts


def last_json(text: str) -> dict[str, Any] | None:
    """The last line of C{text} that is a JSON object (the viewer's --stats-json)."""
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def needed_tools(parts: set[str]) -> list[str]:
    tools = []
    if parts & {"scp", "ssh-forward"}:
        tools += [SSHD, SFTP_SERVER, "ssh", "scp", "ssh-keygen"]
    if parts & {"ssh-forward", "forward"}:
        tools.append("curl")
    if parts & {"files", "forward"}:
        tools.append("Xvfb")
    return missing_tools(tools)


def parse_args() -> tuple[argparse.Namespace, set[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="256 MiB, one round")
    p.add_argument("--size-mib", type=int, default=0, help="file size (default 1024; quick 256)")
    p.add_argument("--rounds", type=int, default=0, help="rounds, best counts (default 3; quick 1)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run these parts (repeatable or comma-separated): {', '.join(PARTS)}",
    )
    p.add_argument("--references", action="store_true", help="only " + ", ".join(REFERENCES))
    p.add_argument("--json", type=Path, help="write every run and the goals here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory and logs")
    args = p.parse_args()
    parts = {x for arg in args.only for x in arg.split(",") if x}
    if args.references:
        parts |= set(REFERENCES)
    unknown = parts - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    return args, parts or set(PARTS)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the children the same way as Ctrl-C


def main() -> int:
    args, parts = parse_args()
    missing = needed_tools(parts)
    if missing:
        print(f"missing {', '.join(missing)}: {APT_HINT}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    load0 = os.getloadavg()
    started = time.monotonic()
    bench = Bench(args, parts)
    print(
        f"bench/transfer.py: parts {', '.join(p for p in PARTS if p in parts)}; "
        f"{bench.size / MIB:.0f} MiB, {bench.rounds} round(s); load average "
        f"{load0[0]:.2f} on {os.cpu_count()} cores; MB = 10^6 bytes",
        flush=True,
    )
    completed = False
    try:
        bench.setup()
        bench.run()
        completed = True
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
    finally:
        bench.stop()
        if args.keep or not completed:
            print(f"logs kept in {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    goals = report(bench.runs, bench.size, bench.info)
    load1 = os.getloadavg()
    print(
        f"load average {load0[0]:.2f} -> {load1[0]:.2f}; run time "
        f"{time.monotonic() - started:.0f} s"
    )
    if args.json:
        runs = {name: [asdict(r) for r in rs] for name, rs in bench.runs.items()}
        out = {"info": bench.info, "load": [load0, load1], "runs": runs, "goals": goals}
        args.json.write_text(json.dumps(out, indent=2, default=str))
    failed = any(not r.ok for rs in bench.runs.values() for r in rs)
    return 0 if completed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
