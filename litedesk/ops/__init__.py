"""Operations: the server's HTTP listener (C{/health}, C{/metrics}) and its event log.

L{litedesk.ops.web} builds the twisted.web C{Site} every operations
resource hangs from, so a later API server and console join the same
listener (port P-2, where RustDesk clients look for an API server).
"""
