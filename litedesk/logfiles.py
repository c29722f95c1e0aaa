# -*- test-case-name: tests.test_hostile_login -*-
"""Private twistd log files for C{litedesk-host} and C{litedesk-relay}.

twistd creates C{--logfile} with the process umask (usually 0644), and its
C{LogFile} keeps the mode of an existing file for every rotated one.  Logs
name peers, ids and addresses, and old ones may hold a one-time password,
so they must be as private as the config directory.  twistd opens the log
only after the plugin's C{makeService} has run
(C{ApplicationRunner.run}: C{createOrGetApplication} then
C{logger.start}), so C{makeService} can create it 0600 first, or tighten an
existing one, and twistd then keeps 0600 across rotations.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.logger import Logger

__all__ = ["make_twistd_log_private", "twistd_log_path"]

_log = Logger(namespace="litedesk.logfiles")


def twistd_log_path(options: Mapping[str, Any] | None) -> Path | None:
    """The file twistd will log to with these (its own) options, or None.

    None for stdout (C{--logfile -}, or no C{--logfile} with C{--nodaemon})
    and syslog, as in twistd's C{_getLogObserver}.
    """
    if options is None:
        return None
    if options.get("syslog"):
        return None
    name = options.get("logfile")
    if name == "-":
        return None
    if not name:
        if options.get("nodaemon"):
            return None
        name = "twistd.log"  # twistd's default for daemons
    return Path(str(name))


def make_twistd_log_private(plugin_options: Any) -> Path | None:
    """Create or tighten twistd's log file (and rotated copies) to mode 0600.

    @param plugin_options: a twistd plugin's C{usage.Options}; twistd's own
        options are its C{parent} (absent when called outside twistd).
    @return: the log file's path, or None when twistd does not log to a file.
    """
    path = twistd_log_path(getattr(plugin_options, "parent", None))
    if path is None:
        return None
    try:
        # O_CREAT with a mode creates it private; fchmod tightens an existing
        # one.  O_APPEND without O_TRUNC: an existing log is kept as it is.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as e:
        # twistd reports an unusable log file itself when it opens it.
        _log.warn("Cannot make the log file {path} private: {error}", path=str(path), error=e)
        return path
    rotated = re.compile(re.escape(path.name) + r"\.\d+")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        siblings = []
    for old in siblings:
        if rotated.fullmatch(old.name) and old.is_file() and not old.is_symlink():
            with contextlib.suppress(OSError):
                os.chmod(old, 0o600)
    return path
