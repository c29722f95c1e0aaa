"""The viewer's own settings file: remembered server and key, recent hosts.

Stored as JSON in C{$XDG_CONFIG_HOME/litedesk/viewer.json} (by default
C{~/.config/litedesk/viewer.json}), written atomically and readable only by
the user (0600): the server key is not a secret, but the list of hosts a
person connects to is nobody else's business.  Passwords are never stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

MAX_RECENT = 12
_log = Logger(namespace="litedesk.viewer.config")


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "litedesk" / "viewer.json"


@dataclass
class RecentHost:
    """A host the viewer connected to (or tried to)."""

    peer_id: str
    name: str = ""
    last_used: float = 0.0


@dataclass
class ViewerConfig:
    """What the viewer remembers between runs.

    @ivar server: rendezvous server C{HOST[:PORT]} ("" = not remembered).
    @ivar key: the server's public key.
    @ivar host_key: the local key that opens the viewer menu instead of
        going to the remote desktop (a Tk keysym name, as TigerVNC's F8).
    """

    server: str = ""
    key: str = ""
    remember: bool = True
    host_key: str = "F8"
    scale: str = "fit"  # "fit" or "1:1"
    quality: str = "balanced"
    fps: int = 0
    clipboard_sync: bool = True
    screenshot_dir: str = ""
    recent: list[RecentHost] = field(default_factory=list)

    def add_recent(self, peer_id: str, name: str = "", now: float | None = None) -> None:
        """Put C{peer_id} first in the recent list (once), dropping the oldest."""
        now = time.time() if now is None else now
        old = [r for r in self.recent if r.peer_id != peer_id]
        prev = next((r for r in self.recent if r.peer_id == peer_id), None)
        name = name or (prev.name if prev else "")
        self.recent = [RecentHost(peer_id, name, now), *old][:MAX_RECENT]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ViewerConfig:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        cfg = cls()
        for name in (
            "server",
            "key",
            "host_key",
            "scale",
            "quality",
            "screenshot_dir",
        ):
            if isinstance(raw.get(name), str):
                setattr(cfg, name, raw[name])
        for name in ("remember", "clipboard_sync"):
            if isinstance(raw.get(name), bool):
                setattr(cfg, name, raw[name])
        if isinstance(raw.get("fps"), int) and raw["fps"] >= 0:
            cfg.fps = raw["fps"]
        recent: list[RecentHost] = []
        for item in raw.get("recent", []) or []:
            if isinstance(item, dict) and isinstance(item.get("peer_id"), str):
                recent.append(
                    RecentHost(
                        item["peer_id"],
                        str(item.get("name", "")),
                        float(item.get("last_used", 0.0) or 0.0),
                    )
                )
        cfg.recent = recent[:MAX_RECENT]
        return cfg


def load_config(path: Path | None = None) -> ViewerConfig:
    """The stored settings, or defaults when the file is missing or unreadable."""
    path = path or default_config_path()
    try:
        return ViewerConfig.from_json(path.read_text())
    except FileNotFoundError:
        return ViewerConfig()
    except (OSError, ValueError) as e:
        # A broken file must not stop the viewer: start from defaults and
        # say why (the next save replaces it).
        _log.warn("Ignoring viewer config {path}: {error}", path=str(path), error=e)
        return ViewerConfig()


def save_config(cfg: ViewerConfig, path: Path | None = None) -> None:
    """Write atomically (temp file + rename) with mode 0600."""
    path = path or default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = cfg.to_json()
    fd, tmp = tempfile.mkstemp(prefix=".viewer-", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def as_dict(cfg: ViewerConfig) -> dict[str, Any]:
    return asdict(cfg)
