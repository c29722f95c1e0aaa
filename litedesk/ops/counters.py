"""Counts the operations metrics need that no other object keeps: plain numbers.

L{OpsCounters} counts sign-ins, by way in (the RustDesk API's login, the
web console's sign-in form) and outcome, in a fixed table (every key exists
from the start, an unknown key raises), so what a peer sends can never add
a series or grow memory; L{litedesk.ops.metrics.ServerCollector} reads it
at scrape time.  How punch requests end is counted by the rendezvous server
itself (L{litedesk.rendezvous.punch_stats}).
"""

from __future__ import annotations

__all__ = ["LOGIN_KINDS", "LOGIN_OUTCOMES", "OpsCounters"]

#: Ways in whose sign-ins are counted: C{api} (POST /api/login by a RustDesk
#: app), C{console} (the web console's form).
LOGIN_KINDS: tuple[str, ...] = ("api", "console")
#: The C{outcome} label of the sign-in counters.
LOGIN_OUTCOMES: tuple[str, ...] = ("ok", "bad_password", "unknown_user", "disabled", "rate_limited")


class OpsCounters:
    """Sign-ins by way in and outcome.

    The API and console code call L{login}; the collector reads L{logins}.
    """

    def __init__(self) -> None:
        self.logins: dict[str, dict[str, int]] = {
            kind: dict.fromkeys(LOGIN_OUTCOMES, 0) for kind in LOGIN_KINDS
        }

    def login(self, kind: str, outcome: str) -> None:
        """Count one sign-in attempt.

        @param kind: one of L{LOGIN_KINDS}.
        @param outcome: one of L{LOGIN_OUTCOMES}.
        @raise KeyError: either is not in its table (a programming error:
            the label sets are fixed).
        """
        self.logins[kind][outcome] += 1
