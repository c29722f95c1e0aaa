"""hbbr-compatible relay: pairs two connections by uuid and pipes bytes between them.

- L{litedesk.relay.table}: pairing table and deadlines (sans-IO, injected clock);
- L{litedesk.relay.limiter}: hbbr's bandwidth limits as token buckets (sans-IO);
- L{litedesk.relay.server}: the protocol (wire only) and the L{Relay} controller;
- L{litedesk.relay.service}: options, settings and the twistd service tree.
"""
