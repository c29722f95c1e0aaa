"""WebSocket listeners for the rendezvous server (P+2) and the relay (P+3).

RustDesk clients in WebSocket mode, and its web client, reach hbbs on port
P+2 and hbbr on the relay port + 2, or a reverse proxy's C{/ws/id} and
C{/ws/relay}.  One binary message carries what a BytesCodec frame carries on
TCP.  Rather than a second implementation of the rendezvous and relay rules,
each WebSocket connection carries the same protocol object a TCP connection
gets, over a transport that turns messages into frames and frames into
messages (docs/websocket.rst §2):

- L{litedesk.websocket.framing}: a BytesCodec byte stream cut into messages
  without holding their payloads (sans-IO);
- L{litedesk.websocket.proxy}: which client address a request from a trusted
  reverse proxy names (sans-IO);
- L{litedesk.websocket.bridge}: the autobahn protocol that carries an inner
  Twisted protocol, its transport and its factory;
- L{litedesk.websocket.fastpath}: a paired relay leg's binary frames read
  and unmasked without autobahn (sans-IO), and the header of the frames
  the bridge writes;
- L{litedesk.websocket.rendezvous}, L{litedesk.websocket.relay}: what differs
  between the two ports.
"""
