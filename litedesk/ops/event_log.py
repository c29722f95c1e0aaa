"""C{--event-log FILE}: one JSON line per event, for audits and fail2ban.

Events: a relay pair ended (C{relay_pair_ended}), a connection the relay
refused at accept (C{relay_refused}), a punch hole request
(C{punch_request}), a refused registration (C{registration_refused}, by UDP
or on a stream) and a sign-in (C{sign_in}, through the API or the console).
Each line is a JSON object with C{time} (Unix seconds), C{event} and the
event's fields; the source IP is always the field C{ip} (C{ip_a}, C{ip_b}
for the two legs of a relay pair) so a fail2ban filter matches one key.

The places that see these events (the relay's accept and pair end, the
rendezvous server's punch and registration paths, the API's and console's
sign-in) hold an optional L{EventSink} and
call it; the assembly injects an L{EventLog}.  Each line is written with
one C{write(2)} on a file opened C{O_APPEND} (0600), so nothing queues in
memory and lines from one process never interleave.  Relay uuids are always
blurred (they are a rendezvous secret while a pair forms); with
C{--blur-ids} peer ids are too; user names are not peer ids and stay as
they are (truncated like every text field).  Blurring is a keyed hash (HMAC-SHA256,
first 12 hex digits) under a key drawn at start-up: the same id blurs the
same way for the life of the process, so lines can be correlated, but the
id cannot be recovered by hashing guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["MAX_FIELD", "EventLog", "EventSink"]

#: Longest text field written (peer ids come from strangers).
MAX_FIELD = 100


class EventSink(Protocol):
    """What the relay and the rendezvous server call when an event happens."""

    def relay_pair_ended(
        self,
        uuid: str,
        ip_a: str,
        ip_b: str,
        a_to_b: int,
        b_to_a: int,
        duration: float,
        outcome: str,
    ) -> None: ...

    def punch_request(self, ip: str, target_id: str, result: str) -> None: ...

    def registration_refused(self, ip: str, peer_id: str, reason: str, detail: str) -> None: ...

    def relay_refused(self, ip: str, reason: str) -> None: ...

    def sign_in(self, ip: str, user: str, result: str, via: str) -> None: ...


class EventLog:
    """An L{EventSink} appending JSON lines to a file.

    @param path: the file; created 0600 if missing, appended to.
    @param clock: stamps each line.
    @param blur_ids: replace peer ids by their keyed hash.
    @raise OSError: the file cannot be opened (start-up fails with the reason).
    """

    _log = Logger()

    def __init__(self, path: str, clock: IReactorTime, *, blur_ids: bool = False) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._clock = clock
        self._blur_ids = blur_ids
        self._key = os.urandom(32)
        self._failed = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def blur(self, text: str) -> str:
        """The keyed hash of C{text}: 12 hex digits."""
        mac = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return mac.hexdigest()[:12]

    def _id(self, peer_id: str) -> str:
        peer_id = peer_id[:MAX_FIELD]
        return self.blur(peer_id) if self._blur_ids else peer_id

    def _write(self, event: str, **fields: Any) -> None:
        if self._fd < 0:
            return
        record = {"time": round(self._clock.seconds(), 3), "event": event, **fields}
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
        try:
            os.write(self._fd, line.encode("ascii"))
        except OSError as e:
            # A full disk must not stop the server; say so once, not per event.
            if not self._failed:
                self._log.error("Event log write failed: {error}", error=str(e))
            self._failed = True
        else:
            self._failed = False

    def relay_pair_ended(
        self,
        uuid: str,
        ip_a: str,
        ip_b: str,
        a_to_b: int,
        b_to_a: int,
        duration: float,
        outcome: str,
    ) -> None:
        self._write(
            "relay_pair_ended",
            uuid=self.blur(uuid),
            ip_a=ip_a,
            ip_b=ip_b,
            a_to_b=a_to_b,
            b_to_a=b_to_a,
            duration=round(duration, 3),
            outcome=outcome[:MAX_FIELD],
        )

    def punch_request(self, ip: str, target_id: str, result: str) -> None:
        self._write("punch_request", ip=ip, target_id=self._id(target_id), result=result)

    def registration_refused(self, ip: str, peer_id: str, reason: str, detail: str) -> None:
        self._write(
            "registration_refused",
            ip=ip,
            id=self._id(peer_id),
            reason=reason,
            detail=detail[:MAX_FIELD],
        )

    def relay_refused(self, ip: str, reason: str) -> None:
        """The relay refused a connection from C{ip} at accept (C{reason}: the limit)."""
        self._write("relay_refused", ip=ip, reason=reason[:MAX_FIELD])

    def sign_in(self, ip: str, user: str, result: str, via: str) -> None:
        """A sign-in from C{ip} as C{user}: C{result} an outcome, C{via} "api" or "console"."""
        self._write(
            "sign_in",
            ip=ip,
            user=user[:MAX_FIELD],
            result=result[:MAX_FIELD],
            via=via[:MAX_FIELD],
        )
