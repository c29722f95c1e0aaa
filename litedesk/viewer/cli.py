"""C{litedesk-viewer}: connect to a host and show or script its desktop.

C{--headless} needs no display: it connects, logs in, performs the actions
given on the command line in order (click, type, keys, clipboard), saves the
first complete frame after them (C{--screenshot}) and can print statistics
as JSON.  C{--monitor N} first switches to the host's monitor N, to which
C{--click} and the screenshot then refer.  Failures print one line with
the reason and exit non-zero.
With C{--ls}, C{--download} or C{--upload} it opens a file-transfer session
instead and runs those in order (L{litedesk.viewer.file_actions}).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from litedesk.heap import keep_freed_memory
from litedesk.input.key_combos import parse_key_list, text_input
from litedesk.input.mouse import MouseButton, encode_mask
from litedesk.screen.decode import CODECS
from litedesk.session.input_messages import key_to_proto
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer.api_login import LoginFailure
from litedesk.viewer.connection import (
    LOGIN_TIMEOUT,
    UsageFailure,
    connect,
    is_direct,
    read_password,
    session_protocol,
    transport_name,
    warn_password_in_argv,
    with_timeout,
)
from litedesk.viewer.file_actions import (
    FileTransferError,
    add_file_arguments,
    run_file_session,
)
from litedesk.viewer.route import ConnectError
from litedesk.viewer.sign_in import (
    add_sign_in_arguments,
    check_sign_in_arguments,
    read_login_password,
    run_account_command,
)

SETTLE = 0.5  # let the host's screen catch up with our input before the screenshot
SWITCH_TIMEOUT = 10.0  # seconds the host has to confirm a --monitor switch
_log = Logger(namespace="litedesk.viewer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="litedesk-viewer",
        description="Connect to a LiteDesk (or RustDesk-protocol) host by id through a "
        "rendezvous server, or directly by HOST:PORT.",
    )
    p.add_argument("target", nargs="?", help="host id, or HOST:PORT for a direct connection")
    p.add_argument(
        "--rendezvous",
        "-r",
        help="rendezvous server HOST[:PORT], or with --websocket a ws:// or wss:// URL; "
        "a comma-separated list (A,B,...) is tried in turn until one answers",
    )
    p.add_argument("--key", "-k", help="the rendezvous server's public key")
    p.add_argument(
        "--password",
        "-p",
        help="the host's password; visible to other local users (ps): prefer "
        "--password-file or LITEDESK_PASSWORD",
    )
    p.add_argument("--password-file", help="read the password from this file")
    p.add_argument("--force-relay", action="store_true", help="always go through the relay")
    p.add_argument(
        "--no-udp",
        action="store_true",
        help="never punch UDP or use QUIC: TCP hole punching, then the relay",
    )
    p.add_argument(
        "--nat-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="use our NAT type tested on this network less than SECONDS ago "
        "(default 600; 0: test on every connect)",
    )
    p.add_argument(
        "--websocket",
        action="store_true",
        help="reach the server only over WebSocket (behind a reverse proxy on 443): requests "
        "and the relay over ws:// or wss://, always through the relay; a HOST[:PORT] maps as "
        "RustDesk maps it (IP: ws://IP:PORT+2, name: wss://NAME/ws/id); a ws:// or wss:// "
        "--rendezvous implies it",
    )
    p.add_argument(
        "--ws-ca",
        metavar="FILE",
        help="with --websocket: PEM certificates a wss:// server must chain to (a private CA) "
        "instead of the system's CAs",
    )
    p.add_argument("--headless", action="store_true", help="no window: scripted session")
    p.add_argument("--screenshot", metavar="FILE.png", help="save the screen after the actions")
    p.add_argument("--type", dest="type_text", metavar="TEXT", help="type this text")
    p.add_argument("--keys", metavar="COMBOS", help="press keys, e.g. ctrl+a,Return")
    p.add_argument(
        "--click", metavar="X,Y", help="left click at these coordinates of the shown monitor"
    )
    p.add_argument(
        "--monitor",
        type=int,
        default=None,
        metavar="N",
        help="show the host's monitor N (1 is the first; --stats-json lists them) "
        "before the actions",
    )
    p.add_argument("--clipboard-set", metavar="TEXT", help="put TEXT on the host clipboard")
    p.add_argument("--clipboard-get", action="store_true", help="print the host clipboard")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="S",
        help="stay connected S seconds (for statistics)",
    )
    p.add_argument("--stats-json", action="store_true", help="print statistics as JSON")
    p.add_argument(
        "--forward",
        metavar="LPORT:HOST:PORT",
        help="forward 127.0.0.1:LPORT to HOST:PORT as the host reaches it (no window)",
    )
    p.add_argument(
        "--codec",
        choices=CODECS,
        default=None,
        help="the codec to ask the host for (default: H.264 from a LiteDesk host, VP9 "
        "from a RustDesk host; any other codec this viewer decodes may be asked of a "
        "RustDesk host)",
    )
    p.add_argument(
        "--known-hosts", type=Path, default=None, help="known hosts file for direct connections"
    )
    p.add_argument(
        "--timeout", type=float, default=LOGIN_TIMEOUT, help="seconds to wait for the login"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log to stderr")
    p.add_argument(
        "--discover-lan",
        action="store_true",
        help="list hosts on this LAN that answer discovery (id, hostname, "
        "platform, address; JSON with --stats-json) and exit",
    )
    p.add_argument(
        "--discover-wait",
        type=float,
        default=1.0,
        metavar="S",
        help="how long --discover-lan waits for answers",
    )
    p.add_argument("--lan-port", type=int, default=0, help="LAN discovery UDP port (21119)")
    p.add_argument(
        "--discover-to",
        action="append",
        metavar="ADDR",
        help="send the discovery ping here instead of broadcasting (repeatable)",
    )
    add_file_arguments(p)
    add_sign_in_arguments(p)
    w = p.add_argument_group("window (without --headless)")
    w.add_argument("--config", type=Path, default=None, help="viewer config file")
    w.add_argument("--host-key", default=None, help="key that opens the viewer menu (F8)")
    w.add_argument("--scale", choices=("fit", "1:1"), default=None, help="initial scaling")
    w.add_argument(
        "--quality", choices=("speed", "balanced", "best"), default=None, help="image quality"
    )
    w.add_argument("--fps", type=int, default=None, help="frame-rate cap (0 = host default)")
    w.add_argument("--screenshot-dir", default=None, help="where the Screenshot entry saves")
    w.add_argument(
        "--discovery",
        default=None,
        metavar="HOST[:PORT]",
        help="LiteDesk v1 discovery listener for Browse (default: the server, port 8877)",
    )
    w.add_argument("--geometry", default=None, help="initial window geometry (WxH+X+Y)")
    w.add_argument("--log-file", default=None, help="write the log to this file")
    return p


async def run_headless(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    password = read_password(args)
    t0 = reactor.seconds()
    session = ViewerSession(reactor, args.target, password, codec=args.codec)
    servers: list[str] = []
    path = await connect(reactor, args, session, on_server=servers.append)
    info = await with_timeout(reactor, session.logged_in, args.timeout, "the login")
    connect_time = reactor.seconds() - t0
    if args.monitor is not None:
        await _switch_monitor(reactor, session, len(info.displays), args.monitor)
    origin = (0, 0)
    if 0 <= session.display < len(info.displays):
        # After a switch this is the geometry the host's answer carried.
        d = info.displays[session.display]
        origin = (d.x, d.y)

    if _send_actions(session, args, origin):
        await deferLater(reactor, SETTLE, lambda: None)
        if session.view_only_notice:
            raise SessionError("view only", session.view_only_notice)
    clipboard: str | None = None
    if args.clipboard_get:
        clipboard = session.remote_clipboard
        if clipboard is None:
            clipboard = await with_timeout(
                reactor, session.next_clipboard(), 5.0, "the host clipboard"
            )
    if args.screenshot:
        after = reactor.seconds()
        session.refresh()
        frame = await with_timeout(reactor, session.next_frame(after), 10.0, "a frame")
        frame.image.save(args.screenshot, "PNG")
    if args.duration > 0:
        end = reactor.seconds() + args.duration
        while reactor.seconds() < end and session.error is None:
            session.ping()
            await deferLater(reactor, min(1.0, max(0.0, end - reactor.seconds())), lambda: None)
    if session.error is not None:
        raise session.error
    stats = _session_stats(session, path, connect_time, reactor.seconds() - t0 - connect_time)
    # The server that found the host (of --rendezvous A,B,...); None when direct.
    stats["rendezvous"] = servers[-1] if servers else None
    session.disconnect()
    await with_timeout(reactor, session.ended, 5.0, "the disconnect")
    if clipboard is not None:
        stats["clipboard"] = clipboard
    return stats


async def _switch_monitor(reactor: Any, session: ViewerSession, count: int, number: int) -> None:
    """Ask the host to stream its monitor C{number} (1-based) and wait until
    it confirms with its own C{SwitchDisplay}, which carries that monitor's
    geometry (L{ViewerSession} applies it), and one frame more.

    @raise UsageFailure: the host has no such monitor.
    @raise SessionError: the host did not confirm in L{SWITCH_TIMEOUT}.
    """
    if not 1 <= number <= count:
        raise UsageFailure(f"--monitor {number}: the host has {count} monitor(s)")
    index = number - 1
    if session.display == index:
        return
    session.switch_display(index)
    deadline = reactor.seconds() + SWITCH_TIMEOUT
    # Polled: the session has no event for the answer, and a switch is a
    # one-off of a scripted run.
    while session.display != index:
        if session.error is not None:
            raise session.error
        if reactor.seconds() >= deadline:
            raise SessionError("no monitor switch", f"the host did not switch to monitor {number}")
        await deferLater(reactor, 0.05, lambda: None)
    # The first frame decoded after the answer: the decoder restarts at the
    # switch, so it is a key frame, which the switch made (LiteDesk hosts
    # drop a frame of the old monitor that was being encoded when the switch
    # arrived).  It may already be here: the answer was polled for, and a
    # fast host's key frame follows it within milliseconds (waiting for one
    # more then waited for a change of a still screen, and timed out).
    switched = session.display_switched_at
    await with_timeout(
        reactor, session.next_frame(after=switched), SWITCH_TIMEOUT, "a frame after the switch"
    )


def _send_actions(
    session: ViewerSession, args: argparse.Namespace, origin: tuple[int, int]
) -> bool:
    """Send the input and clipboard the command line asks for; whether there was any.

    @param origin: the top left corner of the host's display, which --click is relative to.
    """
    acted = False
    if args.click:
        try:
            x, y = (int(v) for v in args.click.split(","))
        except ValueError:
            raise UsageFailure("--click takes X,Y") from None
        x, y = x + origin[0], y + origin[1]
        session.send_mouse(encode_mask(0), x, y)
        session.send_mouse(encode_mask(1, MouseButton.LEFT), x, y)
        session.send_mouse(encode_mask(2, MouseButton.LEFT), x, y)
        acted = True
    if args.type_text:
        session.send_key(key_to_proto(text_input(args.type_text)))
        acted = True
    if args.keys:
        try:
            combos = parse_key_list(args.keys)
        except ValueError as e:
            raise UsageFailure(f"--keys: {e}") from None
        for k in combos:
            session.send_key(key_to_proto(k))
        acted = True
    if args.clipboard_set is not None:
        session.set_clipboard(args.clipboard_set)
        acted = True
    return acted


def _session_stats(
    session: ViewerSession, path: str, connect_time: float, duration: float
) -> dict[str, Any]:
    """The figures C{--stats-json} prints for a finished headless session."""
    st = session.stats
    active = (st.last_frame_at or 0) - (st.first_frame_at or 0)
    return {
        "path": path,
        "transport": transport_name(session),
        "protocol": session_protocol(session),
        "connect_time": round(connect_time, 4),
        "frames": st.frames,
        "fps": round((st.frames - 1) / active, 2) if active > 0 and st.frames > 1 else 0.0,
        "bytes": st.bytes,
        "video_bytes": st.video_bytes,
        "rtt_ms": st.rtt_ms,
        "key_frames": st.key_frames,
        "decode_errors": st.decode_errors,
        "codec": st.codec,
        "key_frame_requests": st.key_frame_requests,
        "tiles": st.tiles,
        "tile_errors": st.tile_errors,
        "duration": round(duration, 3),
        "throughput_kbps": round(st.bytes * 8 / 1000 / max(1e-6, duration), 1),
        "frames_lost": st.decode_errors + session.decoder.skipped,
        "cursor": list(session.cursor) if session.cursor is not None else None,
        "monitor": session.display + 1,
        "monitors": _monitors(session),
        "cursor_shape": (
            [session.cursor_shape.width, session.cursor_shape.height]
            if session.cursor_shape is not None
            else None
        ),
    }


def _monitors(session: ViewerSession) -> list[dict[str, Any]]:
    """The host's monitors as C{--stats-json} lists them (number N is C{--monitor N})."""
    displays = session.peer_info.displays if session.peer_info is not None else []
    return [
        {
            "number": i + 1,
            "name": d.name,
            "x": d.x,
            "y": d.y,
            "width": d.width,
            "height": d.height,
        }
        for i, d in enumerate(displays)
    ]


async def _discover_lan(reactor: Any, args: argparse.Namespace) -> None:
    """Print the hosts that answer a LAN discovery ping (spec 7.5)."""
    from litedesk.discovery.client import LAN_PORT
    from litedesk.viewer.browse import lan_search

    targets = tuple(args.discover_to or ("255.255.255.255",))
    hosts = await lan_search(
        reactor, args.lan_port or LAN_PORT, wait=args.discover_wait, targets=targets
    )
    if args.stats_json:
        print(
            json.dumps(
                [
                    {
                        "id": h.peer_id,
                        "hostname": h.name,
                        "platform": h.platform,
                        "address": h.address,
                    }
                    for h in hosts
                ]
            )
        )
        return
    for h in hosts:
        print(f"{h.peer_id}\t{h.name}\t{h.platform}\t{h.address}")


def _check_sign_in(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_sign_in_arguments(parser, args)
    if args.login is not None and args.target and is_direct(args.target):
        parser.error("--login signs in to a rendezvous server: give a host id, not HOST:PORT")


def _login_password(args: argparse.Namespace) -> str | None:
    """The API password for C{--login} (None without it); exits when none comes."""
    if args.login is None:
        return None
    try:
        return read_login_password(args.login.strip())
    except LoginFailure as e:
        print(f"litedesk-viewer: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor as _reactor
    from twisted.internet.task import react

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_sign_in(parser, args)
    warn_password_in_argv(args)
    keep_freed_memory()
    if args.discover_lan:
        del _reactor
        react(lambda reactor: ensureDeferred(_discover_lan(reactor, args)))
        return
    # Read before anything else runs: at a terminal this prompts.
    args.login_password = _login_password(args)
    account_only = (args.login is not None or args.logout) and not args.target
    # File actions need no window: they imply --headless.
    if not account_only and not args.headless and not args.file_ops and not args.forward:
        from litedesk.viewer.window import run_window

        del _reactor
        raise SystemExit(run_window(args))
    if not args.target and not account_only:
        parser.error("a host id or HOST:PORT is required")
    if args.verbose:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(sys.stderr)], redirectStandardIO=False
        )
    else:
        from twisted.logger import globalLogBeginner

        globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)

    async def run(reactor: Any) -> None:
        if account_only:
            await run_account_command(reactor, args)
            return
        try:
            if args.forward:
                from litedesk.viewer.forward import run_forward

                stats = await run_forward(reactor, args)
            elif args.file_ops:
                stats = await run_file_session(reactor, args)
            else:
                stats = await run_headless(reactor, args)
        except (ConnectError, SessionError, UsageFailure, FileTransferError) as e:
            # ConnectError covers the sign-in's LoginFailure (--login with an id).
            print(f"litedesk-viewer: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if args.clipboard_get:
            print(stats.get("clipboard", ""))
        if args.stats_json:
            stats.pop("clipboard", None)
            print(json.dumps(stats))

    del _reactor
    react(lambda reactor: ensureDeferred(run(reactor)))
