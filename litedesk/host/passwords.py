"""The host's passwords on disk: the permanent one's hash and the one-time one.

Apart from the agent's assembly because both the options' help text and the
agent name these files, and because what is written where (0600, never to
the log) is a security property worth reading on its own.
"""

from __future__ import annotations

from pathlib import Path

from twisted.logger import Logger

from litedesk.host.identity import write_private
from litedesk.session.password import StoredPassword

__all__ = [
    "ONE_TIME_PASSWORD_FILE",
    "PASSWORD_FILE",
    "load_password",
    "publish_one_time_password",
]

PASSWORD_FILE = "password"
# Without --password-file the current one-time password is here (0600),
# never in the log: twistd logs may be read by others or shipped elsewhere.
ONE_TIME_PASSWORD_FILE = "one-time-password"

_log = Logger(namespace="litedesk.host")


def load_password(config_dir: Path, password_file: str | None) -> StoredPassword | None:
    """Hash a given password into the config dir, or load the stored hash."""
    stored_path = config_dir / PASSWORD_FILE
    if password_file is not None:
        try:
            text = Path(password_file).read_text().strip("\r\n")
        except OSError as e:
            raise SystemExit(f"litedesk-host: cannot read {password_file}: {e}") from None
        if not text:
            raise SystemExit(f"litedesk-host: {password_file} is empty")
        if stored_path.exists():
            try:
                old = StoredPassword.from_text(stored_path.read_text())
                if old.matches(text):
                    return old
            except ValueError:
                pass
        stored = StoredPassword.create(text)
        write_private(stored_path, stored.to_text() + "\n")
        return stored
    if stored_path.exists():
        try:
            return StoredPassword.from_text(stored_path.read_text())
        except ValueError as e:
            raise SystemExit(f"litedesk-host: {stored_path}: {e}") from None
    return None


def publish_one_time_password(path: Path, password: str, why: str) -> None:
    """Write the one-time password to its 0600 file and log only where it is."""
    try:
        write_private(path, password + "\n")
    except OSError as e:
        _log.error("Cannot write the one-time password to {path}: {error}", path=str(path), error=e)
        return
    _log.warn(
        "One-time password ({why}): read it from {path}",
        why=why,
        path=str(path),
        one_time_password_file=str(path),
    )
