from twisted.application.service import ServiceMaker

litedeskHost = ServiceMaker(
    "LiteDesk host agent",
    "litedesk.host_tap",
    "Background agent that makes this desktop reachable by LiteDesk and RustDesk viewers",
    "litedesk-host",
)
