from twisted.application.service import ServiceMaker

litedeskRelay = ServiceMaker(
    "LiteDesk relay server",
    "litedesk.relay_tap",
    "RustDesk-compatible rendezvous/ID server and relay (hbbs + hbbr)",
    "litedesk-relay",
)
