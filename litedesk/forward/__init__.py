"""TCP port forwarding over a session (RustDesk's PORT_FORWARD, docs/protocol.rst §13).

L{litedesk.forward.rules} decides which targets a host lets viewers reach
and parses the viewer's C{--forward LPORT:HOST:PORT}; L{litedesk.forward.splice}
joins a session in raw mode and a TCP connection.  The host's half is
L{litedesk.session.host_forward}, the viewer's L{litedesk.viewer.forward}.
"""
