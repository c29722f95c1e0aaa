"""The web console: server-rendered pages on the operations listener, at C{/}."""
