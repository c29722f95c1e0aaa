"""Fixtures shared by the test modules; this package holds no tests.

Kept apart from the C{test_*} modules so that trial never collects a helper
as a test module and a test module never imports another one for its
helpers.  Each module holds one kind of fixture:

  - L{tests.support.skips}: the one skip helper (L{requires}): skip outside
    CI, fail in CI, when a test class needs a tool this machine lacks;
  - L{tests.support.polling}: wait for a state with a deadline, blocking
    (L{wait_until}) or as a Deferred (L{until});
  - L{tests.support.ports}: free loopback ports for real server processes;
  - L{tests.support.clock}: drive a task.Clock call by call, like a reactor;
  - L{tests.support.images}: the test screen and the mean image error;
  - L{tests.support.fakes}: stand-ins for the host's collaborators;
  - L{tests.support.processes}: twistd, a running litedesk-relay, stopping
    processes, socket exchanges with them;
  - L{tests.support.xvfb}: a real Xvfb X server, also split into RandR
    monitors (two side by side: L{tests.support.xvfb.dual_monitor_xvfb});
  - L{tests.support.recorder}: an X event recorder window (also a program);
  - L{tests.support.relay}: an in-process relay and its test peers;
  - L{tests.support.e2e_lab}: server, hosts and viewers as real processes
    on loopback;
  - L{tests.support.natlab}: the NAT lab in network namespaces, and
    L{tests.support.lossy_link}: a link with delay, loss and a rate limit
    between one of its routers and the public side (what netem would do);
  - L{tests.support.natsim}: cone and symmetric NATs in memory on a Clock,
    for the UDP punch state machine;
  - L{tests.support.udp_punch_peer}: one side of a UDP punch as a program
    for the NAT lab, and the UDP reflector standing in for the rendezvous
    server there;
  - L{tests.support.natpmp_gateway}: a PCP / NAT-PMP gateway on loopback,
    from the RFCs' figures; L{tests.support.miniupnpd}: a real miniupnpd
    (UPnP IGD, NAT-PMP, PCP) on a lab router, and
    L{tests.support.natpmp_probe}: a stand-in host (also a program) whose
    NAT-PMP/PCP-mapped UDP and TCP ports answer probes from the WAN;
  - L{tests.support.cluster_lab}: that lab with PostgreSQL and two cluster
    nodes sharing it, and probes that register, punch and ask who is
    online from inside it;
  - L{tests.support.rustdesk_client}, L{tests.support.rustdesk_rendezvous}
    and L{tests.support.rustdesk_host}: a stock RustDesk client (session
    and rendezvous) and a stock RustDesk host, written from RustDesk's
    source and independent of LiteDesk's own classes;
  - L{tests.support.rustdesk_files} (with its disk side,
    L{tests.support.rustdesk_fs}) and L{tests.support.rustdesk_forward}: that
    client's file-transfer and port-forward sessions;
  - L{tests.support.stream_host}: a stock RustDesk host in TCP mode
    (registered on a rendezvous stream), and the client's ID change;
  - L{tests.support.ws_client} and L{tests.support.nginx}: a WebSocket
    client for the server's WebSocket ports, and a real nginx in front;
  - L{tests.support.host_preamble}: reading the SignedId a LiteDesk host
    sends first, for tests that speak raw TLS to it;
  - L{tests.support.listening_host}: a host agent on a private Xvfb with
    C{--listen};
  - L{tests.support.browser}: Debian's headless chromium driven by
    selenium from a thread while the reactor serves, keeping a screenshot
    and the page source when a script fails (the web console's tests);
  - L{tests.support.console}: a real server for the web console's tests
    and a cookie-keeping HTTP client that signs in;
  - L{tests.support.rustdesk_api_client}: a RustDesk app's calls to its
    "API server" (sign-in, heartbeat, sysinfo, audit, address book), and
    L{tests.support.api_server}: a real server with users and a registered
    host for those calls;
  - L{tests.support.rendezvous_nodes}: rendezvous servers in the test
    process on RustDesk's port layout, sharing a key pair (failover tests);
  - L{tests.support.postgres}: a throwaway PostgreSQL cluster from
    Debian's packages, shared by a test process, a database per test;
  - L{tests.support.imports}: what a module imports, for the emulators'
    independence checks;
  - L{tests.support.quic_pair}: a QUIC host socket and viewer sockets on
    loopback, with a real-frame streamer and an input recorder (the QUIC
    session tests);
  - L{tests.support.realtime}: undoing the real-time scheduling SVT-AV1
    gives a process run as root;
  - L{tests.support.trial_summary} and L{tests.support.coverage_table}:
    what tests/run.sh prints after trial (counts, skips in CI, coverage).
"""
