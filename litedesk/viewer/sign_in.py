"""C{litedesk-viewer --login USER} and C{--logout}, and the token a connection sends.

The command-line side of the API sign-in (L{litedesk.viewer.api_login} talks
HTTP, L{litedesk.viewer.api_tokens} keeps the tokens):

  - C{--login USER} reads the password from standard input (typed without
    echo at a terminal), signs in on the API server (C{--api-server}, else
    RustDesk's rendezvous port - 2) and stores the token for the rendezvous
    server; with a host id it then connects, sending that token;
  - C{--logout} ends the token on the API server and forgets it (here even
    when the API server cannot be told: the person asked to be signed out);
  - L{token_for} is what every connection sends in its punch and relay
    requests: the stored token for C{--rendezvous}, or none.

The rendezvous server is C{--rendezvous}, else the one the viewer remembers
(L{litedesk.viewer.config}), as the window does.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any, TextIO

from twisted.logger import Logger

from litedesk.viewer.api_login import LoginFailure, device_uuid, sign_in, sign_out
from litedesk.viewer.api_tokens import (
    SignedIn,
    TokenStore,
    api_server_url,
    logins_path,
    server_key,
)
from litedesk.viewer.config import load_config

__all__ = [
    "add_sign_in_arguments",
    "check_sign_in_arguments",
    "login",
    "logout",
    "read_login_password",
    "run_account_command",
    "token_for",
]

_MAX_PASSWORD = 1024
_log = Logger(namespace="litedesk.viewer.sign_in")


class SignInUsage(LoginFailure):
    """The sign-in cannot start: no server, a bad --api-server, no password."""


def add_sign_in_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "signing in (servers started with --require-login)",
        "The token is kept per rendezvous server in logins.json beside the viewer's "
        "config file and sent with every connection to that server.",
    )
    g.add_argument(
        "--login",
        metavar="USER",
        help="sign in on the server's API as USER (password on standard input, or typed "
        "at the terminal), keep the token, then connect if a host id is given",
    )
    g.add_argument(
        "--logout", action="store_true", help="sign out of the server's API and forget the token"
    )
    g.add_argument(
        "--api-server",
        metavar="URL",
        help="the server's API, e.g. https://example.org (default: http://HOST:P-2 for "
        "--rendezvous HOST:P, as RustDesk apps find it)",
    )


def check_sign_in_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the sign-in options (argparse exits)."""
    if args.login is not None and args.logout:
        p.error("--login and --logout exclude each other")
    if args.logout and args.target:
        p.error("--logout takes no host id")
    if args.login is not None and not args.login.strip():
        p.error("--login needs a user name")


def read_login_password(user: str, stream: TextIO | None = None) -> str:
    """The password: typed without echo at a terminal, else one line of C{stream}.

    @raise SignInUsage: no password came.
    """
    stream = stream if stream is not None else sys.stdin
    if stream.isatty():
        password = getpass.getpass(f"Password for {user}: ", stream=sys.stderr)
    else:
        password = stream.readline(_MAX_PASSWORD + 1).rstrip("\r\n")
    if not password:
        raise SignInUsage("no password on standard input")
    return password


def _first(servers: str) -> str:
    # --rendezvous A,B,... names the nodes of one cluster, which share their
    # accounts: the sign-in and its token belong to the first.
    return servers.split(",")[0].strip()


def _server(args: argparse.Namespace) -> str:
    server = args.rendezvous or load_config(getattr(args, "config", None)).server
    if not server:
        raise SignInUsage("--rendezvous is needed: which server to sign in to")
    return _first(str(server))


def _store(args: argparse.Namespace) -> TokenStore:
    return TokenStore(logins_path(getattr(args, "config", None)))


async def login(reactor: Any, args: argparse.Namespace, password: str) -> SignedIn:
    """Sign in as C{args.login} and keep the token; what was kept."""
    server = _server(args)
    try:
        api = api_server_url(server, getattr(args, "api_server", None))
        server_key(server)  # where the token goes: it must parse before we ask for one
    except ValueError as e:
        raise SignInUsage(str(e)) from None
    uuid = device_uuid()
    answer = await sign_in(reactor, api, args.login.strip(), password, uuid)
    signed = SignedIn(
        api, answer.user or args.login.strip(), answer.access_token, uuid, time.time()
    )
    store = _store(args)
    try:
        store.put(server, signed)
    except OSError as e:
        raise LoginFailure(f"signed in, but cannot keep the token in {store.path}: {e}") from None
    return signed


async def logout(reactor: Any, args: argparse.Namespace) -> str:
    """Sign out of the server's API and forget the token; what to tell the person.

    @raise LoginFailure: the API server could not be told (the token is
        forgotten here all the same).
    """
    server = _server(args)
    store = _store(args)
    signed = store.get(server)
    if signed is None:
        return f"not signed in to {server}"
    try:
        store.remove(server)
    except OSError as e:
        raise LoginFailure(f"cannot forget the token in {store.path}: {e}") from None
    api = getattr(args, "api_server", None) or signed.api_server
    try:
        api = api_server_url(server, api)
        status = await sign_out(reactor, api, signed.access_token, signed.uuid)
    except (ValueError, LoginFailure) as e:
        raise LoginFailure(
            f"forgot the token for {server}, but could not end it on the API server ({e}): "
            "it stays valid until it expires or an admin runs litedesk-admin user sign-out"
        ) from None
    _log.info("Signed out of {api} (HTTP {status})", api=api, status=status)
    return f"signed out of {server} ({signed.user})"


async def token_for(reactor: Any, args: argparse.Namespace) -> str:
    """The token to send to C{args.rendezvous}: signing in first when
    C{--login} came with a host id (once: reconnects reuse the stored token)."""
    password = getattr(args, "login_password", None)
    if getattr(args, "login", None) and password is not None:
        args.login_password = None
        return (await login(reactor, args, password)).access_token
    if not args.rendezvous:
        return ""
    return _store(args).token(_first(str(args.rendezvous)))


async def run_account_command(reactor: Any, args: argparse.Namespace) -> None:
    """C{--login} or C{--logout} without a host id: do it, say what happened."""
    try:
        if args.logout:
            print(f"litedesk-viewer: {await logout(reactor, args)}")
            return
        signed = await login(reactor, args, args.login_password)
    except LoginFailure as e:
        print(f"litedesk-viewer: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"litedesk-viewer: signed in as {signed.user} on {signed.api_server}")
