"""The figures of bench/transfer.py: one measured command, the measurements that
need no LiteDesk process (curl, the raw relay), memory, and the report.

A L{Run} is one command's outcome: throughput, how its seconds were
obtained, the sampled memory of the processes it involved, or why it
failed.  L{report} prints the best round of each against its reference of
the same run, as ratios, and returns the goals with PASS/MISS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import encode_frame

MIB = 1 << 20
GOAL_DIRECT = 0.6
GOAL_RELAY = 0.5
GOAL_FORWARD = 0.5
GOAL_GROWTH = 64 * MIB


@dataclass
class Run:
    """One measured command.

    @ivar timing: where C{seconds} came from (e.g. C{"wall - connect_time"}).
    @ivar memory: per process (C{"host"}, C{"viewer"}): C{start}, C{peak},
        C{end}, C{base} (what growth counts from), C{growth} in bytes and
        C{growth_of_size}.
    """

    name: str
    ok: bool
    mbps: float | None = None
    seconds: float | None = None
    timing: str = ""
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)

    def brief(self) -> str:
        if not self.ok:
            return f"{self.name:34s} FAILED: {' | '.join(self.error.splitlines()[-3:])}"
        line = f"{self.name:34s} {self.mbps or 0:8.1f} MB/s  {self.seconds or 0:6.2f} s"
        line += f" ({self.timing})"
        stats = self.info.get("stats")
        if isinstance(stats, dict) and "path" in stats:
            line += f", path {stats['path']}"
        if "host_cpu_s" in self.info:
            line += (
                f"; CPU s host {self.info['host_cpu_s']:.2f} viewer {self.info['viewer_cpu_s']:.2f}"
            )
        for proc, m in self.memory.items():
            line += f"; {proc} RSS +{m['growth'] / MIB:.1f} MiB"
        return line


def sha256_file(path: os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _own_seconds(transfers: object) -> float | None:
    """The sum of the seconds each transfer in the viewer's C{"transfers"} reports."""
    items = [transfers] if isinstance(transfers, dict) else transfers
    if not isinstance(items, list):
        return None
    total = 0.0
    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("seconds", "elapsed", "duration", "time"):
            value = item.get(key)
            if isinstance(value, (int, float)) and value > 0:
                total += value
                break
    return total or None


def resumed_bytes(stats: dict[str, Any]) -> int:
    """Bytes the viewer's transfers did not move because a partial file was resumed."""
    items = stats.get("transfers")
    if not isinstance(items, list):
        return 0
    return sum(int(t.get("resumed") or 0) for t in items if isinstance(t, dict))


def transfer_seconds(stats: dict[str, Any], wall: float) -> tuple[float, str]:
    """A viewer command's transfer time and where it came from."""
    own = _own_seconds(stats.get("transfers"))
    if own:
        return own, "the transfer's own seconds"
    connect = stats.get("connect_time")
    if isinstance(connect, (int, float)):
        return wall - connect, "wall - connect_time"
    return wall, "wall"


def memory_figures(
    samples: dict[str, list[int]], host_start: int, viewer_base: int | None, size: int
) -> dict[str, dict[str, float]]:
    """Start, peak, end and growth per process from its RSS samples."""
    out = {}
    for name, values in samples.items():
        if not values:
            continue
        start = host_start if name == "host" and host_start else values[0]
        base = viewer_base if name == "viewer" and viewer_base else start
        peak = max(values)
        growth = max(0, peak - base)
        out[name] = {
            "start": float(start),
            "peak": float(peak),
            "end": float(values[-1]),
            "base": float(base),
            "growth": float(growth),
            "growth_of_size": growth / size,
        }
    return out


def curl_download(name: str, port: int, size: int, timeout: float = 600) -> Run:
    """curl of /src.bin from 127.0.0.1:C{port} into /dev/null; its C{speed_download}."""
    fmt = "%{http_code} %{size_download} %{speed_download} %{time_starttransfer} %{time_total}"
    url = f"http://127.0.0.1:{port}/src.bin"
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", f"{timeout:.0f}", "-w", fmt, url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 5 or fields[0] != "200" or int(fields[1]) != size:
        error = f"curl exit {out.returncode}, {out.stdout!r} ({size} bytes wanted): {out.stderr}"
        return Run(name, False, error=error.strip())
    return Run(
        name,
        True,
        mbps=float(fields[2]) / 1e6,
        seconds=float(fields[4]),
        timing="curl speed_download",
        info={"first_byte_s": float(fields[3])},
    )


def _pair(port: int, key: str) -> tuple[socket.socket, socket.socket]:
    """Two sockets paired by the relay (one RequestRelay each, the same uuid)."""
    uuid = f"transfer-bench-{os.getpid()}-{time.monotonic_ns()}"
    request = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid, licence_key=key))
    first = encode_frame(request.SerializeToString())
    a = socket.create_connection(("127.0.0.1", port), timeout=10)
    a.sendall(first)
    b = socket.create_connection(("127.0.0.1", port), timeout=10)
    b.sendall(first)
    a.sendall(b"!")  # one byte through proves the pair is complete before the clock starts
    if b.recv(1) != b"!":
        raise ConnectionError("the relay did not pair the two sockets")
    return a, b


def _pump(a: socket.socket, b: socket.socket, size: int, limit: float) -> int:
    """Send C{size} bytes from C{a}, read them at C{b}; the bytes that arrived."""
    out = memoryview(b"\x5a" * MIB)
    inbuf = bytearray(MIB)
    sel = selectors.DefaultSelector()
    for s, event in ((a, selectors.EVENT_WRITE), (b, selectors.EVENT_READ)):
        s.setblocking(False)
        sel.register(s, event)
    sent = got = 0
    deadline = time.monotonic() + limit
    while got < size and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            try:
                if key.fileobj is a:
                    sent += a.send(out[: min(MIB, size - sent)])
                    if sent >= size:
                        sel.unregister(a)
                else:
                    n = b.recv_into(inbuf)
                    if not n:
                        return got
                    got += n
            except (BlockingIOError, InterruptedError):
                pass
    sel.close()
    return got


def relay_raw(port: int, key: str, size: int, limit: float = 600) -> Run:
    """C{size} bytes between two plain sockets through the relay at C{port}."""
    name = "relay raw (2 sockets)"
    try:
        a, b = _pair(port, key)
    except OSError as e:
        return Run(name, False, error=f"pairing: {e}")
    try:
        t0 = time.monotonic()
        got = _pump(a, b, size, limit)
        seconds = time.monotonic() - t0
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    if got != size:
        return Run(name, False, error=f"{got} of {size} bytes arrived")
    return Run(name, True, size / seconds / 1e6, seconds, "first byte sent to last received")


# -- the report -----------------------------------------------------------------------


def best(runs: list[Run]) -> Run | None:
    """The fastest successful round, else the last failed one."""
    ok = [r for r in runs if r.ok and r.mbps]
    return max(ok, key=lambda r: r.mbps or 0) if ok else (runs[-1] if runs else None)


def _ratio(run: Run | None, ref: Run | None) -> float | None:
    if run is None or ref is None or not (run.ok and ref.ok and run.mbps and ref.mbps):
        return None
    return run.mbps / ref.mbps


def _row(runs: dict[str, list[Run]], name: str, refs: list[str], label: str = "") -> None:
    """One figure: its best round, the ratio to each reference's best round, and the
    ratio to the first reference round by round (how much the machine's noise moved it)."""
    rs = runs.get(name)
    run = best(rs) if rs else None
    if run is None:
        return
    if not run.ok:
        print(f"  {run.brief()}")
        return
    bests = [(ref, best(runs.get(ref, []))) for ref in refs]
    ratios = " | ".join(f"{r:.2f}x {ref}" for ref, b in bests if (r := _ratio(run, b)) is not None)
    line = f"  {label or name:28s} {run.mbps or 0:8.1f} MB/s  {f'({ratios})' if ratios else ''}"
    if len(rs or []) > 1:
        pairs = zip(rs or [], runs.get(refs[0], []) if refs else [], strict=False)
        by_round = [_ratio(r, ref) for r, ref in pairs] if refs else []
        shown = [f"{r.mbps:.0f}" if r.ok and r.mbps else "failed" for r in rs or []]
        line += f"  rounds: {', '.join(shown)} MB/s"
        if by_round:
            line += " = " + ", ".join("-" if x is None else f"{x:.2f}x" for x in by_round)
    print(line.rstrip())


def report(runs: dict[str, list[Run]], size: int, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Print every figure with its same-run reference; return the goals."""
    if any(n.startswith(("scp", "litedesk direct", "litedesk relay", "relay raw")) for n in runs):
        _report_files(runs, size, info)
    if any(n.startswith(("http", "ssh -L", "litedesk forward")) for n in runs):
        _report_forward(runs, size)
    growth = _report_memory(runs, size)
    return _goals({name: best(rs) for name, rs in runs.items()}, growth)


def _report_files(runs: dict[str, list[Run]], size: int, info: dict[str, Any]) -> None:
    print(f"\n## 1. file transfer, {size / MIB:.0f} MiB of random bytes, SHA-256 checked")
    print("  MB/s of the best round (x the reference's best); rounds: each (x the same round's)")
    if "ssh_cipher" in info:
        print(
            f"  scp: cipher {info['ssh_cipher']}, over an open connection (a new one "
            f"costs {info['ssh_setup_s']:.3f} s)"
        )
    for d in ("upload", "download"):
        _row(runs, f"scp {d}", [])
        for path in ("direct", "relay"):
            _row(runs, f"litedesk {path} {d}", [f"scp {d}"])
    _row(runs, "relay raw (2 sockets)", ["scp upload", "scp download"])


def _report_forward(runs: dict[str, list[Run]], size: int) -> None:
    print(f"\n## 2. port forwarding: HTTP download of {size / MIB:.0f} MiB, curl speed_download")
    _row(runs, "http direct", [], "http direct (ceiling)")
    _row(runs, "ssh -L", ["http direct"])
    for path in ("direct", "relay"):
        _row(runs, f"litedesk forward {path}", ["ssh -L", "http direct"])


def _report_memory(runs: dict[str, list[Run]], size: int) -> dict[tuple[str, str], float]:
    """Per LiteDesk command and process, the round with the largest growth; returns growths."""
    worst: dict[tuple[str, str], float] = {}
    if any(r.memory for name, rs in runs.items() for r in rs if name.startswith("litedesk")):
        print("\n## 3. memory, VmRSS in MiB: start peak end, growth (fraction of the file); worst")
    for name, rs in runs.items():
        if not name.startswith("litedesk") or "warm-up" in name:
            continue
        for proc in ("host", "viewer"):
            figures = [r.memory[proc] for r in rs if proc in r.memory]
            if not figures:
                continue
            m = max(figures, key=lambda f: f["growth"])
            worst[(name, proc)] = m["growth"]
            print(
                f"  {name:26s} {proc:6s} {m['start'] / MIB:7.1f} {m['peak'] / MIB:7.1f} "
                f"{m['end'] / MIB:7.1f}  +{m['growth'] / MIB:6.1f} MiB "
                f"({m['growth'] / size:.3f} of the file; from {m['base'] / MIB:.1f})"
            )
    return worst


def _goals(b: dict[str, Run | None], growth: dict[tuple[str, str], float]) -> list[dict[str, Any]]:
    """PASS/MISS per goal; FAILED when the LiteDesk command or its reference failed.

    Goals whose LiteDesk command was not run (C{--only}) are left out.
    """
    checks: list[tuple[str, str, str, float, bool]] = []  # what, run, reference, goal, >=
    for d in ("upload", "download"):
        for path, goal in (("direct", GOAL_DIRECT), ("relay", GOAL_RELAY)):
            run = f"litedesk {path} {d}"
            checks.append((f"{run} >= {goal} x scp", run, f"scp {d}", goal, True))
    for path in ("direct", "relay"):
        run = f"litedesk forward {path}"
        checks.append((f"{run} >= {GOAL_FORWARD} x ssh -L", run, "ssh -L", GOAL_FORWARD, True))
    out: list[dict[str, Any]] = []
    if any(name in b for _, name, _, _, _ in checks) or growth:
        print("\n## goals")
    for what, name, ref, goal, _ in checks:
        if name in b and ref not in b:
            print(f"  {'NO REF':7s} {what}: {ref} was not run (--only)")
            out.append({"goal": what, "value": None, "verdict": "NO REF"})
        elif name in b:
            out.append(_verdict(what, _ratio(b[name], b.get(ref)), goal, at_least=True))
    for (name, proc), g in growth.items():
        what = f"{name}: {proc} RSS growth < {GOAL_GROWTH // MIB} MiB"
        out.append(_verdict(what, g / MIB, GOAL_GROWTH / MIB, at_least=False))
    return out


def _verdict(what: str, value: float | None, goal: float, at_least: bool) -> dict[str, Any]:
    if value is None:
        verdict, shown = "FAILED", "a run or its reference failed"
    else:
        verdict = "PASS" if (value >= goal if at_least else value < goal) else "MISS"
        shown = f"{value:.2f}" + ("x" if at_least else " MiB")
    print(f"  {verdict:7s} {what}: {shown}")
    return {"goal": what, "value": value, "verdict": verdict}
