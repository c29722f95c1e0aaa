"""A database URL as it may be logged or shown: without its password.

Apart from L{litedesk.rendezvous.peer_db} (which opens the store) so that
the PostgreSQL store and C{litedesk-admin} can use it without importing the
module that imports them.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["is_postgres_url", "redact_url"]


def is_postgres_url(url: str) -> bool:
    """Whether C{--database} names PostgreSQL (C{postgresql://} or C{postgres://})."""
    return url.startswith(("postgresql://", "postgres://"))


_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """C{url} with any password replaced by C{***}: what may be logged or shown.

    Handles the URL form (C{user:secret@host}, C{?password=secret}) and
    libpq's C{key=value} form.  A URL that does not parse is shown as
    C{***} whole rather than risk showing a password.
    """
    if not is_postgres_url(url):
        return _KV_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "***"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}" if at and ":" in userinfo else parts.netloc
    query = urlencode(
        [(k, "***" if k.strip().lower() == "password" else v) for k, v in pairs], safe="*"
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
