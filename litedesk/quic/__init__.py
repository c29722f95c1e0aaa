"""LiteDesk host/viewer sessions over QUIC (issue 14).

The same session classes as over TCP (L{litedesk.session.host_session},
L{litedesk.session.viewer_session}) run on a QUIC stream instead of a TLS
stream, with TLS 1.3 inside QUIC pinned to the host's Ed25519 identity key
exactly as on TCP (docs/protocol.rst §8.1).  QUIC runs
on a UDP socket the caller gives (a hole-punched port): aioquic's sans-IO
connection is driven by a Twisted C{DatagramProtocol}.

- L{litedesk.quic.tls_config}: the host's and viewer's QUIC/TLS settings, and
  the host-key pin check;
- L{litedesk.quic.link}: one connection driven by the reactor, the session on
  its stream;
- L{litedesk.quic.stream_transport}: that stream as an C{ITransport};
- L{litedesk.quic.host}: the host's socket (many viewers, bounded handshakes);
- L{litedesk.quic.viewer}: the viewer's socket (one host, migration);
- L{litedesk.quic.aioquic_internals}: the two private aioquic attributes read.
"""
