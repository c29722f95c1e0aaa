"""The host/viewer session: TLS pinned to the host key, login, message framing.

One set of classes serves both ends of a session:

- L{litedesk.session.tls}: TLS 1.3 with the host as the TLS server whatever
  side opened the stream; L{litedesk.session.host_certificate}: its
  certificate, self-signed with the host's Ed25519 identity key
  (L{litedesk.session.host_key}); L{litedesk.session.pinning}: the viewer
  pinning that key (server-signed C{IdPk}, or L{litedesk.session.known_hosts});
- L{litedesk.session.switching}: a plaintext preamble (a relay leg's
  C{RequestRelay}) before the stream is handed to the session's TLS;
- L{litedesk.session.login}: RustDesk's salted challenge login, sans-IO, with
  the per-source failure limiter and the rotating one-time password;
- L{litedesk.session.framing}: BytesCodec frames of C{hbb.Message}.
"""
