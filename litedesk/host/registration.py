"""The host's registration with a rendezvous server (RustDesk's C{start_udp}), sans-IO.

Timers follow RustDesk (docs/protocol.rst §7.1): a
1 s tick; a heartbeat (C{RegisterPeer}) when the last answer is 15 s old;
a retransmit when a request is unanswered for 3 s; C{RegisterPk} whenever
the server asks (C{request_pk}) or the key is not confirmed yet.

Unlike RustDesk's client, refusals are not retried silently forever:
C{UUID_MISMATCH} (the id belongs to another machine) stops registration and
is reported, C{TOO_FREQUENT} backs off, and the state says why the host is
not reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from litedesk.proto import rendezvous_pb2 as rz

REG_INTERVAL = 15.0
REG_TIMEOUT = 3.0
TOO_FREQUENT_BACKOFF = 30.0
NOT_DEPLOYED_BACKOFF = 30.0
MIN_SERIAL = 3

Result = rz.RegisterPkResponse.Result


class RegState(Enum):
    STARTING = "starting"
    REGISTERED = "registered"
    UNREACHABLE = "server not answering"
    REFUSED = "refused by the server"


@dataclass
class Event:
    """Something the agent should log or act on."""

    kind: str  # "registered", "key_confirmed", "unreachable", "refused", "config_update", ...
    detail: str = ""


@dataclass
class Output:
    send: list[rz.RendezvousMessage] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Registration:
    """State of one host's registration with one rendezvous server."""

    def __init__(
        self,
        peer_id: str,
        uuid: bytes,
        pk: bytes,
        serial: int = 0,
        interval: float = REG_INTERVAL,
        timeout: float = REG_TIMEOUT,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.peer_id = peer_id
        self.uuid = uuid
        self.pk = pk
        self.serial = serial
        self.key_confirmed = False
        self.state = RegState.STARTING
        self.last_response: float | None = None
        self.outstanding_since: float | None = None
        self.paused_until = 0.0
        self.misses = 0
        self.refusal = ""

    # -- outputs -------------------------------------------------------------

    def _register_peer(self) -> rz.RendezvousMessage:
        return rz.RendezvousMessage(
            register_peer=rz.RegisterPeer(id=self.peer_id, serial=max(self.serial, MIN_SERIAL))
        )

    def _register_pk(self) -> rz.RendezvousMessage:
        return rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id=self.peer_id, uuid=self.uuid, pk=self.pk)
        )

    def _request(self, now: float, out: Output) -> None:
        msg = self._register_peer() if self.key_confirmed else self._register_pk()
        out.send.append(msg)
        self.outstanding_since = now

    # -- inputs --------------------------------------------------------------

    def tick(self, now: float) -> Output:
        """Call about once a second."""
        out = Output()
        if self.state is RegState.REFUSED and self.refusal == "UUID_MISMATCH":
            return out
        if now < self.paused_until:
            return out
        if self.outstanding_since is not None and now - self.outstanding_since >= self.timeout:
            self.misses += 1
            self.outstanding_since = None
            if self.misses == 2 and self.state is not RegState.UNREACHABLE:
                self.state = RegState.UNREACHABLE
                out.events.append(Event("unreachable", f"no answer to {self.misses} requests"))
            self._request(now, out)
            return out
        expired = self.last_response is None or now - self.last_response >= self.interval
        if self.outstanding_since is None and expired:
            self._request(now, out)
        return out

    def received(self, msg: rz.RendezvousMessage, now: float) -> Output:
        """A datagram from the server (other pushes are the agent's business)."""
        out = Output()
        kind = msg.WhichOneof("union")
        if kind == "register_peer_response":
            self._answered(now, out)
            if msg.register_peer_response.request_pk:
                self.key_confirmed = False
                out.send.append(self._register_pk())
                self.outstanding_since = now
            elif self.state is not RegState.REGISTERED:
                self.state = RegState.REGISTERED
                out.events.append(Event("registered"))
        elif kind == "register_pk_response":
            self._answered(now, out)
            self._pk_result(msg.register_pk_response.result, now, out)
        elif kind == "configure_update":
            cu = msg.configure_update
            if cu.serial > self.serial:
                self.serial = cu.serial
                out.events.append(
                    Event("config_update", ",".join(cu.rendezvous_servers) or "(no servers)")
                )
        return out

    def _answered(self, now: float, out: Output) -> None:
        if self.state is RegState.UNREACHABLE:
            out.events.append(Event("reachable", "server answers again"))
            self.state = RegState.STARTING
        self.last_response = now
        self.outstanding_since = None
        self.misses = 0

    def _pk_result(self, result: int, now: float, out: Output) -> None:
        if result == rz.RegisterPkResponse.OK:
            first = not self.key_confirmed
            self.key_confirmed = True
            self.refusal = ""
            if first:
                # hbbs does not take a RegisterPk that changes nothing as a new
                # address; a heartbeat does.  Send one now, or after an agent
                # restart (new UDP port) the server would push to the old port
                # until the next heartbeat, up to 15 s later.
                out.send.append(self._register_peer())
                self.outstanding_since = now
            if self.state is not RegState.REGISTERED:
                self.state = RegState.REGISTERED
                out.events.append(Event("registered"))
            elif first:
                out.events.append(Event("key_confirmed"))
            return
        name = Result.Name(result) if result in Result.values() else str(result)
        self.refusal = name
        self.state = RegState.REFUSED
        if result == rz.RegisterPkResponse.UUID_MISMATCH:
            detail = (
                f"id {self.peer_id} is registered to another machine or key on this server; "
                "choose another id with --id (or remove the config directory's id file)"
            )
        elif result == rz.RegisterPkResponse.TOO_FREQUENT:
            self.paused_until = now + TOO_FREQUENT_BACKOFF
            detail = f"too many registrations; retrying in {TOO_FREQUENT_BACKOFF:.0f} s"
        elif result == rz.RegisterPkResponse.NOT_DEPLOYED:
            self.paused_until = now + NOT_DEPLOYED_BACKOFF
            detail = f"server not deployed; retrying in {NOT_DEPLOYED_BACKOFF:.0f} s"
        elif result == rz.RegisterPkResponse.SERVER_ERROR:
            detail = "the server could not store the registration; retrying"
        else:
            detail = f"server answered {name}"
        out.events.append(Event("refused", f"{name}: {detail}"))
