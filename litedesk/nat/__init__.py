"""NAT traversal: the NAT type test, shared-port sockets and TCP hole punching."""
