"""The RustDesk-compatible API server (the apps' "API server" setting), under C{/api}."""
