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


def result_name(result: int) -> str:
    """A C{RegisterPkResponse.Result}'s name, or its number when unknown."""
    return Result.Name(result) if result in Result.values() else str(result)


def uuid_mismatch_detail(peer_id: str) -> str:
    """What the log says when the server binds C{peer_id} to another machine."""
    return (
        f"id {peer_id} is registered to another machine or key on this server; "
        "choose another id with --id (or remove the config directory's id file)"
    )


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

    def restart(self) -> None:
        """Start over with another server: its key is not confirmed there yet.

        The serial is kept (it is the configuration's, not the server's);
        a back-off or refusal from the old server does not apply to the new one.
        """
        self.key_confirmed = False
        self.state = RegState.STARTING
        self.last_response = None
        self.outstanding_since = None
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
        name = result_name(result)
        self.refusal = name
        self.state = RegState.REFUSED
        if result == rz.RegisterPkResponse.UUID_MISMATCH:
            detail = uuid_mismatch_detail(self.peer_id)
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


# -- a host registered on a stream (RustDesk's start_tcp) -------------------------------

#: Seconds of silence after which a host gives its stream up, as a multiple of
#: the keep-alive the server announced (RustDesk: 1.5 x keep_alive).
STREAM_SILENCE_FACTOR = 1.5
#: The keep-alive a stream assumes until the server announces one
#: (RustDesk's DEFAULT_KEEP_ALIVE, 60 s).
DEFAULT_KEEP_ALIVE = 60.0
#: Delays before opening a new stream after one ended, growing while the
#: server cannot be reached or closes at once (a stock host waits up to 18 s).
STREAM_RETRY = (1.0, 2.0, 4.0, 8.0, 15.0)
#: A stream that lived this long (and registered) counts as a success: the
#: next retry starts from the shortest delay again.
STREAM_HEALTHY = 30.0


@dataclass
class StreamOutput(Output):
    """What the stream client must do besides sending messages.

    @ivar heartbeat: answer the server's keep-alive with an empty frame.
    @ivar close: close the stream, for this reason.
    """

    heartbeat: bool = False
    close: str = ""


class StreamRegistration:
    """A host registered on one rendezvous stream at a time (TCP or WebSocket), sans-IO.

    RustDesk's C{start_tcp} (docs/protocol.rst §5.11): on each new stream,
    C{RegisterPk{id, uuid, pk}} at once and every 15 s until it is answered
    C{OK}; the server's empty frames are keep-alives, answered with an empty
    frame; a stream silent for 1.5 x the announced C{keep_alive} is given up.
    When a stream ends a new one follows after a delay (L{STREAM_RETRY}).

    Refusals as over UDP (L{Registration}): C{UUID_MISMATCH} stops for good
    (the id belongs to another machine) and says so; C{TOO_FREQUENT} and
    C{NOT_DEPLOYED} wait 30 s before the next stream; other refusals are
    reported and retried on the next stream (the server closes a refused
    stream).
    """

    def __init__(
        self,
        peer_id: str,
        uuid: bytes,
        pk: bytes,
        interval: float = REG_INTERVAL,
    ) -> None:
        self.peer_id = peer_id
        self.uuid = uuid
        self.pk = pk
        self.interval = interval
        self.state = RegState.STARTING
        self.refusal = ""
        self.key_confirmed = False
        self.keep_alive = DEFAULT_KEEP_ALIVE
        self.paused_until = 0.0
        self.failures = 0  # streams in a row that ended without registering
        self._open = False
        self._opened_at = 0.0
        self._last_received = 0.0
        self._last_sent: float | None = None

    def restart(self) -> None:
        """Start over with another server: no failures there yet, nothing refused."""
        self.state = RegState.STARTING
        self.refusal = ""
        self.key_confirmed = False
        self.paused_until = 0.0
        self.failures = 0

    @property
    def stopped(self) -> bool:
        """Registration gave up for good (the id belongs to another machine)."""
        return self.state is RegState.REFUSED and self.refusal == "UUID_MISMATCH"

    def _register_pk(self, now: float, out: Output) -> None:
        out.send.append(
            rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id=self.peer_id, uuid=self.uuid, pk=self.pk)
            )
        )
        self._last_sent = now

    # -- the stream's life ---------------------------------------------------------

    def opened(self, now: float) -> StreamOutput:
        """A new stream is up: register on it."""
        out = StreamOutput()
        self._open = True
        self._opened_at = now
        self._last_received = now
        self.key_confirmed = False
        self.keep_alive = DEFAULT_KEEP_ALIVE
        self._last_sent = None
        if self.state is RegState.UNREACHABLE:
            self.state = RegState.STARTING
            out.events.append(Event("reachable", "server answers again"))
        self._register_pk(now, out)
        return out

    def tick(self, now: float) -> StreamOutput:
        """Call about once a second while a stream is open."""
        out = StreamOutput()
        if not self._open or self.stopped:
            return out
        silence = STREAM_SILENCE_FACTOR * self.keep_alive
        if now - self._last_received > silence:
            out.close = f"nothing from the server for {silence:g} s"
            return out
        if now < self.paused_until:
            return out
        last = self._last_sent
        if not self.key_confirmed and (last is None or now - last >= self.interval):
            self._register_pk(now, out)
        return out

    def received(self, msg: rz.RendezvousMessage | None, now: float) -> StreamOutput:
        """A frame from the server: C{None} for an empty one (a keep-alive)."""
        out = StreamOutput()
        self._last_received = now
        if msg is None:
            out.heartbeat = True
            return out
        if msg.WhichOneof("union") == "register_pk_response":
            self._pk_result(msg.register_pk_response, now, out)
        return out

    def closed(self, now: float) -> tuple[float | None, list[Event]]:
        """The stream ended: seconds until the next one (None: never), and events."""
        events: list[Event] = []
        was_open, self._open = self._open, False
        if self.stopped:
            return None, events
        if was_open and self.key_confirmed and now - self._opened_at >= STREAM_HEALTHY:
            self.failures = 0
        else:
            self.failures += 1
        if self.failures == 2 and self.state is not RegState.UNREACHABLE:
            self.state = RegState.UNREACHABLE
            events.append(Event("unreachable", "two streams in a row ended without registering"))
        elif self.state is RegState.REGISTERED:
            self.state = RegState.STARTING
            events.append(Event("stream_lost", "the rendezvous stream ended; opening a new one"))
        delay = STREAM_RETRY[min(self.failures, len(STREAM_RETRY) - 1)]
        return max(delay, self.paused_until - now), events

    def _pk_result(self, rpr: rz.RegisterPkResponse, now: float, out: StreamOutput) -> None:
        result = rpr.result
        if result == rz.RegisterPkResponse.OK:
            if rpr.keep_alive > 0:
                self.keep_alive = float(rpr.keep_alive)
            self.key_confirmed = True
            self.refusal = ""
            if self.state is not RegState.REGISTERED:
                self.state = RegState.REGISTERED
                out.events.append(Event("registered"))
            return
        name = result_name(result)
        self.refusal = name
        self.state = RegState.REFUSED
        if result == rz.RegisterPkResponse.UUID_MISMATCH:
            detail = uuid_mismatch_detail(self.peer_id)
            out.close = "registration refused"
        elif result in (rz.RegisterPkResponse.TOO_FREQUENT, rz.RegisterPkResponse.NOT_DEPLOYED):
            self.paused_until = now + TOO_FREQUENT_BACKOFF
            detail = f"retrying in {TOO_FREQUENT_BACKOFF:.0f} s"
        else:
            detail = "retrying on a new stream"
        out.events.append(Event("refused", f"{name}: {detail}"))
