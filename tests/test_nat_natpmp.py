"""PCP (RFC 6887) and NAT-PMP (RFC 6886) port mapping for C{litedesk-host --natpmp}.

- the codec (L{litedesk.nat.natpmp}): request byte layouts from the RFCs'
  figures, responses decoded, responses to another request (nonce, opcode,
  port) not taken, C{UNSUPP_VERSION} in both layouts; hypothesis: any bytes
  into every parser never raise, any well-formed response decodes to its
  fields, and the epoch rule;
- the default gateway read from a routing table file;
- L{NatPmpMapper} against a fake gateway on a real UDP socket on 127.0.0.1
  (L{tests.support.natpmp_gateway}, written from the RFCs, not from the
  codec): PCP success for UDP and TCP
  on one external port, PCP refused or unanswered -> NAT-PMP, no answer at
  all -> logged failure after the bounded repetitions, renewal before the
  lifetime ends, a gateway that lost its state mapped again, forged answers
  from another address ignored, a TCP port granted elsewhere removed, and
  removal (lifetime 0, same nonce) at stop; a gateway whose epoch keeps
  going back re-mapped at most every 30 s.

The host's service, wiring and options: tests/test_nat_natpmp_host.py.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.nat.natpmp import (
    TCP,
    UDP,
    MapResult,
    NatPmpAddressRequest,
    NatPmpMapRequest,
    PcpMapRequest,
    PublicAddress,
    VersionRefused,
    epoch_lost,
)
from litedesk.nat.natpmp_client import default_gateway
from litedesk.nat.natpmp_mapper import NatPmpMapper

from .support.natpmp_gateway import EXT_IP, NONCE, FakeGateway, natpmp_map_response, pcp_response
from .support.polling import pause, until

reactor: Any = _reactor

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


class PcpCodecTests(SynchronousTestCase):
    def request(self, **kw: Any) -> PcpMapRequest:
        args: dict[str, Any] = {
            "nonce": NONCE,
            "protocol": UDP,
            "internal_port": 21118,
            "suggested_port": 21118,
            "lifetime": 7200,
            "client_ip": "10.0.1.10",
        }
        args.update(kw)
        return PcpMapRequest(**args)

    def test_map_request_layout(self) -> None:
        """The request is RFC 6887's 24-byte header (version 2, MAP, lifetime, our
        address IPv4-mapped) then the 36-byte MAP body (nonce, protocol, ports, ::ffff:0:0)."""
        expected = (
            bytes((2, 1, 0, 0))
            + (7200).to_bytes(4, "big")
            + b"\0" * 10
            + b"\xff\xff"
            + bytes((10, 0, 1, 10))
            + NONCE
            + bytes((17, 0, 0, 0))
            + (21118).to_bytes(2, "big")
            + (21118).to_bytes(2, "big")
            + b"\0" * 10
            + b"\xff\xff"
            + b"\0\0\0\0"
        )
        self.assertEqual(self.request().encode(), expected)
        self.assertEqual(len(expected), 60)

    def test_map_response_decoded(self) -> None:
        """A success names the external port, the external address (IPv4, unmapped),
        the granted lifetime and the gateway's epoch."""
        got = self.request().match(pcp_response(external=40000, lifetime=600, epoch=77))
        self.assertEqual(got, MapResult(0, "SUCCESS", 600, 77, UDP, 21118, 40000, EXT_IP))
        assert isinstance(got, MapResult)
        self.assertTrue(got.ok)

    def test_error_result_named(self) -> None:
        """A refusal comes back with the RFC's name for it, not as success."""
        got = self.request().match(pcp_response(result=8))
        assert isinstance(got, MapResult)
        self.assertFalse(got.ok)
        self.assertEqual(got.result_name, "NO_RESOURCES")

    def test_answers_to_other_requests_are_not_ours(self) -> None:
        """Another mapping's nonce, another protocol or port, a request (no R bit),
        a truncated or oversized message: none is taken as our answer."""
        req = self.request()
        good = pcp_response()
        self.assertIsNotNone(req.match(good))
        self.assertIsNone(req.match(pcp_response(nonce=b"x" * 12)))
        self.assertIsNone(req.match(pcp_response(protocol=TCP)))
        self.assertIsNone(req.match(pcp_response(internal=21119)))
        self.assertIsNone(req.match(good[:1] + b"\x01" + good[2:]))
        self.assertIsNone(req.match(good[:59]))
        self.assertIsNone(req.match(good + b"\0" * 1044))
        self.assertIsNotNone(req.match(good + b"\0" * 8))  # options are skipped

    def test_natpmp_gateway_refuses_the_version(self) -> None:
        """A NAT-PMP-only gateway's 8-byte UNSUPP_VERSION (opcode 128, or 0 as in
        the RFC before erratum 3618) tells the client to speak NAT-PMP."""
        for opcode in (128, 0):
            answer = bytes((0, opcode, 0, 1)) + (1234).to_bytes(4, "big")
            self.assertEqual(self.request().match(answer), VersionRefused(0))

    def test_ipv6_external_address(self) -> None:
        """An IPv6 external address is given as it is."""
        ip = ipaddress.IPv6Address("2001:db8::11").packed
        got = self.request().match(pcp_response(ext_ip=ip))
        assert isinstance(got, MapResult)
        self.assertEqual(got.external_ip, "2001:db8::11")


class NatPmpCodecTests(SynchronousTestCase):
    def test_requests_layout(self) -> None:
        """RFC 6886 §3.2 and §3.3: the address request is 2 bytes; a mapping request
        is version 0, opcode 1 (UDP) or 2 (TCP), 2 reserved bytes, ports, lifetime."""
        self.assertEqual(NatPmpAddressRequest().encode(), b"\0\0")
        self.assertEqual(
            NatPmpMapRequest(TCP, 21118, 40000, 3600).encode(),
            bytes((0, 2, 0, 0)) + struct.pack("!HHI", 21118, 40000, 3600),
        )
        self.assertEqual(NatPmpMapRequest(UDP, 1, 0, 0).encode()[:2], b"\0\1")

    def test_map_response_decoded_and_matched(self) -> None:
        """The answer to our opcode and internal port is decoded; another's is not ours."""
        req = NatPmpMapRequest(UDP, 21118, 21118, 7200)
        got = req.match(natpmp_map_response(external=40001, lifetime=3600))
        self.assertEqual(got, MapResult(0, "SUCCESS", 3600, 500, UDP, 21118, 40001))
        self.assertIsNone(req.match(natpmp_map_response(opcode=2)))
        self.assertIsNone(req.match(natpmp_map_response(internal=1)))
        self.assertIsNone(req.match(natpmp_map_response()[:15]))

    def test_address_response_decoded(self) -> None:
        """The address response gives the gateway's external IPv4 address and epoch."""
        data = struct.pack("!BBHI", 0, 128, 0, 42) + bytes((198, 51, 100, 11))
        self.assertEqual(
            NatPmpAddressRequest().match(data), PublicAddress(0, "SUCCESS", 42, EXT_IP)
        )
        self.assertIsNone(NatPmpAddressRequest().match(data[:11]))
        self.assertIsNone(NatPmpAddressRequest().match(b"\0\x81" + data[2:]))

    def test_refusal_names_the_code(self) -> None:
        """NOT_AUTHORIZED (the gateway has mapping turned off) is reported by name."""
        data = struct.pack("!BBHIHHI", 0, 129, 2, 5, 21118, 0, 0)
        got = NatPmpMapRequest(UDP, 21118, 21118, 7200).match(data)
        assert isinstance(got, MapResult)
        self.assertEqual(got.result_name, "NOT_AUTHORIZED")


class EpochTests(SynchronousTestCase):
    def test_epoch_rules(self) -> None:
        """RFC 6887 §8.5: an epoch that went back, or moved much slower or faster
        than our clock, means the gateway lost its mappings; a steady one does not."""
        self.assertFalse(epoch_lost(1000, 0.0, 1600, 600.0))
        self.assertFalse(epoch_lost(1000, 0.0, 1601, 600.5))
        self.assertTrue(epoch_lost(1000, 0.0, 5, 600.0))
        self.assertTrue(epoch_lost(1000, 0.0, 1100, 600.0))
        self.assertTrue(epoch_lost(1000, 0.0, 3000, 600.0))


class ParserPropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=1200))
    def test_garbage_never_raises(self, data: bytes) -> None:
        """Any datagram from the network: each parser returns an answer type or None."""
        kinds = (MapResult, VersionRefused, type(None))
        pcp = PcpMapRequest(NONCE, UDP, 21118, 21118, 7200, "10.0.1.10")
        self.assertIsInstance(pcp.match(data), kinds)
        self.assertIsInstance(NatPmpMapRequest(TCP, 21118, 0, 0).match(data), kinds)
        self.assertIsInstance(
            NatPmpAddressRequest().match(data), (PublicAddress, VersionRefused, type(None))
        )

    @given(
        st.binary(min_size=12, max_size=12),
        st.sampled_from([TCP, UDP]),
        u16,
        u16,
        u32,
        u32,
        st.integers(0, 13).filter(lambda r: r != 1),
        st.binary(min_size=4, max_size=4),
    )
    def test_any_pcp_response_to_us_decodes(
        self,
        nonce: bytes,
        protocol: int,
        internal: int,
        external: int,
        lifetime: int,
        epoch: int,
        result: int,
        ip: bytes,
    ) -> None:
        """A well-formed MAP response to our nonce, protocol and port gives its
        fields back; with one byte of the nonce changed it is not ours."""
        req = PcpMapRequest(nonce, protocol, internal, 0, 100, "10.0.1.10")
        ext = b"\0" * 10 + b"\xff\xff" + ip
        data = pcp_response(nonce, protocol, internal, external, lifetime, epoch, result, ext)
        got = req.match(data)
        assert isinstance(got, MapResult)
        self.assertEqual(
            (got.result, got.external_port, got.lifetime, got.epoch, got.external_ip),
            (result, external, lifetime, epoch, str(ipaddress.IPv4Address(ip))),
        )
        other = bytes((nonce[0] ^ 1,)) + nonce[1:]
        changed = pcp_response(other, protocol, internal, external, lifetime, epoch, result, ext)
        self.assertIsNone(req.match(changed))

    @given(st.sampled_from([TCP, UDP]), u16, u16, u32, st.integers(0, 5).filter(lambda r: r != 1))
    def test_any_natpmp_response_to_us_decodes(
        self, protocol: int, internal: int, external: int, lifetime: int, result: int
    ) -> None:
        """A well-formed NAT-PMP mapping response to our opcode and port gives its fields."""
        req = NatPmpMapRequest(protocol, internal, 0, 100)
        opcode = 1 if protocol == UDP else 2
        data = struct.pack("!BBHIHHI", 0, 128 + opcode, result, 9, internal, external, lifetime)
        got = req.match(data)
        assert isinstance(got, MapResult)
        self.assertEqual(
            (got.result, got.external_port, got.lifetime), (result, external, lifetime)
        )


class DefaultGatewayTests(SynchronousTestCase):
    ROUTES = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n"
        "eth0\t00000000\t0101000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "garbage line\n"
    )

    def test_lowest_metric_default_route(self) -> None:
        """The gateway of the default route with the lowest metric (10.0.1.1 here)."""
        path = Path(self.mktemp())
        path.write_text(self.ROUTES)
        self.assertEqual(default_gateway(str(path)), "10.0.1.1")

    def test_no_default_route(self) -> None:
        """Without a default route (or a routing table) there is no gateway."""
        path = Path(self.mktemp())
        path.write_text(self.ROUTES.splitlines(keepends=True)[0] + self.ROUTES.splitlines()[3])
        self.assertIsNone(default_gateway(str(path)))
        self.assertIsNone(default_gateway(str(path) + ".missing"))


class MapperTests(TestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: Any) -> None:
            text = formatEvent(event)
            if text:
                self.logged.append(text)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.clock = Clock()

    def gateway(self, speaks: str = "pcp") -> FakeGateway:
        fake = FakeGateway(speaks, self.clock)
        port = reactor.listenUDP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.gw_port = port.getHost().port
        return fake

    def mapper(self, tcp_port: int = 21118, udp_port: int = 21118, **kw: Any) -> NatPmpMapper:
        m = NatPmpMapper(
            reactor,
            udp_port,
            tcp_port,
            "127.0.0.1",
            clock=self.clock,
            server_port=self.gw_port,
            **kw,
        )
        self.addCleanup(m.stop)
        return m

    def was_logged(self, text: str) -> bool:
        return any(text in line for line in self.logged)

    @inlineCallbacks
    def run_clock(self, d: Deferred[Any], fake: FakeGateway) -> Any:
        """Let the mapper's timers run until C{d} fires, waiting for each send to arrive."""
        while not d.called:
            sent = len(fake.got)

            def moved(sent: int = sent) -> bool:
                return len(fake.got) > sent or d.called

            yield until(moved, timeout=5)
            if not d.called and self.clock.getDelayedCalls():
                due = min(c.getTime() for c in self.clock.getDelayedCalls())
                self.clock.advance(due - self.clock.seconds())
        return (yield d)

    @inlineCallbacks
    def test_pcp_maps_udp_and_tcp_on_one_external_port(self) -> Any:
        """With PCP the UDP port and the TCP port are mapped to the same external port,
        each mapping with its own nonce, and the host says where it is reachable."""
        fake = self.gateway()
        m = self.mapper()
        port = yield m.start()
        self.assertEqual((port, m.mapped_port, m.tcp_mapped_port), (21118, 21118, 21118))
        self.assertEqual((m.external_ip, m.version), (EXT_IP, "PCP"))
        self.assertEqual((m.udp_port, m.tcp_port), (21118, 21118))
        self.assertEqual(fake.maps, {UDP: (21118, 21118), TCP: (21118, 21118)})
        self.assertEqual(fake.versions(), [2, 2])
        self.assertNotEqual(fake.got[0][24:36], fake.got[1][24:36])
        self.assertTrue(self.was_logged(f"NAT-PMP: mapped {EXT_IP}:21118 -> 127.0.0.1:21118"))

    @inlineCallbacks
    def test_success_without_a_port_is_a_refusal(self) -> Any:
        """A "success" that grants external port 0 is not advertised as a mapping."""
        fake = self.gateway()
        fake.grant[UDP] = 0
        m = self.mapper()
        port = yield m.start()
        self.assertIsNone(port)
        self.assertEqual(m.mapped_port, 0)
        self.assertTrue(self.was_logged("UDP mapping refused: no port granted"), self.logged)

    @inlineCallbacks
    def test_tcp_asks_for_the_port_udp_got(self) -> Any:
        """When UDP gets another external port, TCP asks for that one (and gets it)."""
        fake = self.gateway()
        fake.grant[UDP] = 40000
        m = self.mapper()
        port = yield m.start()
        self.assertEqual((port, m.tcp_mapped_port), (40000, 40000))
        self.assertEqual(fake.maps[TCP], (21118, 40000))

    @inlineCallbacks
    def test_tcp_granted_elsewhere_is_removed(self) -> Any:
        """A TCP mapping on another external port than UDP's is removed (no viewer
        would learn it); the UDP mapping stays advertised."""
        fake = self.gateway()
        fake.grant[TCP] = 40001
        m = self.mapper()
        port = yield m.start()
        self.assertEqual((port, m.tcp_mapped_port), (21118, 0))
        self.assertEqual(fake.maps, {UDP: (21118, 21118)})
        self.assertTrue(self.was_logged("TCP got external port 40001 instead of 21118"))

    @inlineCallbacks
    def test_tcp_only_without_udp(self) -> Any:
        """Without a UDP port (--no-udp) the TCP session port alone is mapped."""
        fake = self.gateway()
        m = self.mapper(udp_port=0)
        port = yield m.start()
        self.assertEqual((port, m.tcp_mapped_port), (21118, 21118))
        self.assertEqual(fake.maps, {TCP: (21118, 21118)})
        self.assertTrue(self.was_logged("(TCP, PCP, lifetime 7200 s)"))

    @inlineCallbacks
    def test_unsupported_version_falls_back_to_natpmp(self) -> Any:
        """A gateway answering PCP with UNSUPP_VERSION is asked with NAT-PMP: the
        external address first, then the mappings."""
        fake = self.gateway("natpmp")
        m = self.mapper()
        port = yield m.start()
        self.assertEqual((port, m.external_ip, m.version), (21118, EXT_IP, "NAT-PMP"))
        self.assertEqual(fake.versions(), [2, 0, 0, 0])
        self.assertEqual([d[1] for d in fake.got[1:]], [0, 1, 2])
        self.assertEqual(fake.maps, {UDP: (21118, 21118), TCP: (21118, 21118)})

    @inlineCallbacks
    def test_natpmp_only(self) -> Any:
        """Told not to speak PCP, the mapper asks with NAT-PMP from the start."""
        fake = self.gateway()
        m = self.mapper(pcp=False)
        port = yield m.start()
        self.assertEqual((port, m.external_ip, m.version), (21118, EXT_IP, "NAT-PMP"))
        self.assertEqual(fake.versions(), [0, 0, 0])

    @inlineCallbacks
    def test_unanswered_pcp_falls_back_to_natpmp(self) -> Any:
        """A gateway that does not answer PCP at all is tried with NAT-PMP after
        the PCP request's bounded repetitions."""
        fake = self.gateway("natpmp-only-silent")
        m = self.mapper(tcp_port=0)
        port = yield self.run_clock(m.start(), fake)
        self.assertEqual((port, m.version), (21118, "NAT-PMP"))
        self.assertEqual(fake.versions(), [2, 2, 2, 2, 0, 0])

    @inlineCallbacks
    def test_no_answer_ends_with_an_error_after_bounded_tries(self) -> Any:
        """A silent gateway gets 4 PCP and 4 NAT-PMP sends (250 ms, doubling), then
        the host logs that nothing is mapped and advertises no port."""
        fake = self.gateway("silent")
        m = self.mapper()
        port = yield self.run_clock(m.start(), fake)
        self.assertIsNone(port)
        self.assertEqual(m.mapped_port, 0)
        self.assertEqual(fake.versions(), [2] * 4 + [0] * 4)
        self.assertTrue(self.was_logged("NAT-PMP: cannot map port 21118"), self.logged)
        self.assertTrue(self.was_logged("no answer from 127.0.0.1"))
        self.assertEqual(self.clock.seconds(), 7.5)  # 2 x (0.25 + 0.5 + 1 + 2)

    @inlineCallbacks
    def test_renewed_before_the_lifetime_ends(self) -> Any:
        """The mappings are renewed at half the granted lifetime, with the same nonce
        and external port, so they never lapse while the host runs."""
        fake = self.gateway()
        fake.lifetime = 100
        m = self.mapper()
        yield m.start()
        first = list(fake.got)
        self.clock.advance(49)
        self.assertEqual(len(fake.got), 2)
        self.clock.advance(1)
        yield until(lambda: len(fake.got) == 4, message="renewal of UDP and TCP")
        self.assertEqual([d[24:36] for d in fake.got[2:]], [d[24:36] for d in first])
        self.clock.advance(50)
        yield until(lambda: len(fake.got) == 6, message="the second renewal")
        self.clock.advance(0)
        yield pause(0.05)
        self.assertEqual(len(fake.got), 6)  # a steady gateway: nothing more
        self.assertEqual(m.mapped_port, 21118)
        self.assertEqual(fake.maps, {UDP: (21118, 21118), TCP: (21118, 21118)})

    @inlineCallbacks
    def test_gateway_that_lost_its_state_is_mapped_again(self) -> Any:
        """An epoch that went backwards (the gateway restarted) makes the mapper ask
        for every mapping again at once instead of at the next renewal."""
        fake = self.gateway()
        fake.lifetime = 100
        m = self.mapper()
        yield m.start()
        fake.restart()
        self.clock.advance(50)
        yield until(lambda: len(fake.got) == 4)
        self.clock.advance(0)
        yield until(lambda: len(fake.got) == 6, message="mapping again at once")
        self.assertEqual(fake.maps, {UDP: (21118, 21118), TCP: (21118, 21118)})
        self.assertTrue(self.was_logged("the gateway lost its mappings"))

    @inlineCallbacks
    def test_epoch_always_going_back_does_not_keep_us_busy(self) -> Any:
        """A gateway whose every answer claims a restart is mapped again at once at
        most once per 30 s; otherwise only renewed at half the lifetime."""
        fake = self.gateway()
        fake.lifetime = 100
        m = self.mapper()
        yield m.start()
        fake.epoch_step = -10
        self.clock.advance(50)
        yield until(lambda: len(fake.got) == 4, message="the renewal")
        self.clock.advance(0)
        yield until(lambda: len(fake.got) == 6, message="one re-mapping")
        for _ in range(3):
            self.clock.advance(0)
            yield pause(0.05)
        self.assertEqual(len(fake.got), 6)
        self.clock.advance(49)
        yield pause(0.05)
        self.assertEqual(len(fake.got), 6)
        self.clock.advance(1)
        yield until(lambda: len(fake.got) == 8, message="the next renewal")
        self.assertEqual(m.mapped_port, 21118)

    @inlineCallbacks
    def test_answers_from_another_address_are_ignored(self) -> Any:
        """A forged answer with the right nonce from another socket is ignored; the
        gateway's own answer is the one used."""
        fake = self.gateway("silent")
        m = self.mapper(tcp_port=0)
        d = m.start()
        yield until(lambda: fake.got)
        request = fake.got[0]
        ours = m._port.getHost().port
        forger = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(forger.stopListening)
        forger.write(pcp_response(request[24:36], external=666), ("127.0.0.1", ours))
        yield until(lambda: m._socket is not None and m._socket.ignored == 1)
        fake.speaks = "pcp"
        self.clock.advance(0.25)
        port = yield d
        self.assertEqual(port, 21118)

    @inlineCallbacks
    def test_stop_removes_the_mappings(self) -> Any:
        """Stopping sends lifetime 0 for both mappings with their nonces; the gateway
        holds nothing afterwards and no port is advertised."""
        fake = self.gateway()
        m = self.mapper()
        yield m.start()
        nonces = {d[36]: d[24:36] for d in fake.got}
        yield m.stop()
        self.assertEqual(fake.lifetimes()[2:], [0, 0])
        self.assertEqual({d[36]: d[24:36] for d in fake.got[2:]}, nonces)
        self.assertEqual(fake.maps, {})
        self.assertEqual((m.mapped_port, m.tcp_mapped_port), (0, 0))
        self.assertTrue(self.was_logged("NAT-PMP: removed the UDP mapping of port 21118"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_stop_while_mapping_leaves_nothing(self) -> Any:
        """A host stopped before the gateway answered leaves no mapping and no timer."""
        fake = self.gateway("silent")
        m = self.mapper()
        d = m.start()
        yield until(lambda: fake.got)
        yield m.stop()
        self.assertIsNone((yield d))
        self.assertEqual(m.mapped_port, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
