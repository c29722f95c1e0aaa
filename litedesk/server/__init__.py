"""The server daemon (C{twistd litedesk-relay}) assembled from the rendezvous,
relay and discovery packages, which do not import each other for it."""
