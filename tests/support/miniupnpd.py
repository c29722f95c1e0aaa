"""A real miniupnpd (UPnP IGD, NAT-PMP and PCP) on a NAT lab router.

Shared by the UPnP and the NAT-PMP/PCP lab tests.  miniupnpd runs in the
router's namespace with the nftables backend in a table of its own (added
before and removed after each test), on the router's LAN bridge.  The lab's
WAN addresses are in TEST-NET-2, which miniupnpd treats as reserved ("port
forwarding is impossible") unless told a public address (C{-o}); the DNAT
rules it installs match the WAN interface, not that address, so a peer on
the WAN reaches a mapping at the router's real WAN address.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from .natlab import NatLab

__all__ = ["DECLARED_EXT_IP", "MINIUPNPD", "UPNP_TABLE", "Miniupnpd"]

MINIUPNPD = shutil.which("miniupnpd") or "/usr/sbin/miniupnpd"
UPNP_TABLE = "ldupnp"
DECLARED_EXT_IP = "11.0.0.11"

NFT_RULESET = f"""table inet {UPNP_TABLE} {{
  chain forward {{ type filter hook forward priority 0; policy accept; jump miniupnpd; }}
  chain miniupnpd {{ }}
  chain prerouting {{ type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd; }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd; }}
  chain postrouting_miniupnpd {{ }}
}}
"""


def miniupnpd_conf(upnp: bool = True, natpmp: bool = False, min_lifetime: int = 120) -> str:
    """miniupnpd's configuration; C{enable_natpmp} covers PCP too in Debian's
    build (2.3.1 has no separate PCP switch); C{min_lifetime} is PCP's floor."""
    return f"""ext_ifname=wan
listening_ip=br-lan
port=0
enable_upnp={"yes" if upnp else "no"}
enable_natpmp={"yes" if natpmp else "no"}
min_lifetime={min_lifetime}
secure_mode=yes
system_uptime=yes
uuid=6c1a1e52-5d1b-4c1e-9b55-4c17e5d0a1de
upnp_table_name={UPNP_TABLE}
upnp_nat_table_name={UPNP_TABLE}
allow 1024-65535 10.0.0.0/8 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


class Miniupnpd:
    """miniupnpd on router C{router} of C{net}, its nft table, its log in C{workdir}."""

    def __init__(self, net: NatLab, router: str, workdir: Path) -> None:
        self.net = net
        self.router = router
        self.dir = workdir
        self.log = workdir / "miniupnpd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, conf: str, started: str = "starting UPnP-IGD") -> None:
        """Create the nft table and run miniupnpd until its log says C{started}."""
        net, r = self.net, self.router
        net.x(r, "nft", "delete", "table", "inet", UPNP_TABLE, check=False)
        (self.dir / "upnp.nft").write_text(NFT_RULESET)
        net.x(r, "nft", "-f", str(self.dir / "upnp.nft"))
        (self.dir / "miniupnpd.conf").write_text(conf)
        with open(self.log, "wb") as log:
            self.proc = net.popen(
                r,
                [
                    MINIUPNPD,
                    "-d",
                    "-f",
                    str(self.dir / "miniupnpd.conf"),
                    "-P",
                    str(self.dir / "miniupnpd.pid"),
                    "-o",
                    DECLARED_EXT_IP,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while started not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"miniupnpd did not start: {self.text()[-2000:]}")
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Stop miniupnpd and remove its nft table."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.net.x(self.router, "nft", "delete", "table", "inet", UPNP_TABLE, check=False)

    def redirects(self) -> str:
        """miniupnpd's DNAT rules (one per mapping)."""
        out = self.net.x(
            self.router, "nft", "list", "chain", "inet", UPNP_TABLE, "prerouting_miniupnpd"
        )
        return out.stdout
