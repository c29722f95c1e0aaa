"""hbbr-compatible relay: pairs two connections by uuid and pipes bytes between them.

- L{litedesk.relay.table}: pairing table and deadlines (sans-IO, injected clock);
- L{litedesk.relay.limiter}: hbbr's bandwidth limits as token buckets (sans-IO);
- L{litedesk.relay.settings}: L{RelaySettings}, everything that tunes the relay;
- L{litedesk.relay.leg}: one leg's protocol (wire only): first frame, early data, pausing;
- L{litedesk.relay.fastread}, L{litedesk.relay.sharedio}: a paired leg's
  C{recv_into}/C{splice} reads through one process-wide buffer and pipe;
- L{litedesk.relay.transport}: the C{tcp.Server} subclass the relay's port builds;
- L{litedesk.relay.server}: the L{Relay} controller (pairing, limits, logging) and its factory;
- L{litedesk.relay.service}: options, settings and the twistd service tree.

Log events (C{twisted.logger}; every event carries C{relay_event}):

- C{refused}: at accept; C{limit} is C{blocklist}, C{max-connections-per-ip} or
  C{max-unpaired}, with C{value} (the limit) and C{count} (current);
- C{closed}: the relay closed a connection; C{reason} is e.g. C{first-frame
  timeout}, C{partner timeout}, C{idle timeout}, C{drain timeout}, C{wrong
  licence key}, C{empty uuid}, C{first frame is register_peer, not
  request_relay}, C{first frame of N bytes exceeds max-first-frame M};
- C{paired}: C{uuid}, C{a_peer} (waited), C{b_peer} (arrived second);
- C{throttled}: C{limit} is C{blacklist} or C{downgrade-threshold}, with
  C{limit_speed} and the values that triggered it;
- C{early_budget_exhausted}: waiting connections stopped reading because the
  early-data budget (C{limit} bytes) is spent; at most one per 10 s, with
  C{suppressed} (pauses since the last one);
- C{pair_finished}: one per pair: C{uuid}, C{a_peer}, C{b_peer}, C{a_to_b},
  C{b_to_a} (bytes), C{duration} (s), C{reason} (first cause and whose side),
  C{throttled}.

Live counters: C{RelayService.stats()} returns L{server.RelayStats}
(connections, handshaking, waiting, active_pairs, pairs_finished,
bytes_relayed, and early data: early_bytes held, early_granted of early_budget,
early_paused, early_exhausted).
"""
