"""C{litedesk-viewer --headless} file actions: C{--ls}, C{--download}, C{--upload}.

With any of them the viewer opens a file-transfer session (RustDesk's conn
type C{FILE_TRANSFER}, docs/protocol.rst §12) instead of a desktop session
and performs them in the order they were given, through
L{litedesk.files.client.FileClient}.  C{--ls} prints one line per entry,
or with C{--stats-json} the statistics JSON carries the listings and the
transfers.  The first failure ends the run with its reason (the caller
prints C{litedesk-viewer: REASON} and exits 1); a file left alone because
it exists is a failure unless C{--overwrite} was given.  A progress bar
shows on a terminal only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from litedesk.files.client import FileClient, FileTransferError, ProgressEvent, Transfer
from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import ViewerSession
from litedesk.viewer.connection import connect, read_password, session_protocol, with_timeout

__all__ = ["FileTransferError", "add_file_arguments", "run_file_session"]

_log = Logger(namespace="litedesk.viewer")
_TYPE_NAMES = {pb.Dir: "dir", pb.DirLink: "dirlink", pb.DirDrive: "drive", pb.File: "file"}
_DIR_TYPES = (pb.Dir, pb.DirLink, pb.DirDrive)


class _FileOp(argparse.Action):
    """Collects C{--ls}, C{--download} and C{--upload} into one list, in the
    order the command line gives them (C{args.file_ops})."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        ops = list(getattr(namespace, "file_ops", None) or [])
        vals = [values] if isinstance(values, str) else list(values or [])
        ops.append((self.const, *vals))
        namespace.file_ops = ops


def add_file_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "file transfer (with --headless; opens a file-transfer session instead of the "
        "desktop, actions run in the order given)"
    )
    g.add_argument(
        "--ls",
        action=_FileOp,
        const="ls",
        metavar="REMOTE",
        dest="file_ops",
        help="list a directory on the host (repeatable; '' is the file root)",
    )
    g.add_argument(
        "--download",
        action=_FileOp,
        const="download",
        nargs=2,
        metavar=("REMOTE", "LOCAL"),
        dest="file_ops",
        help="copy a file or folder from the host to LOCAL (into LOCAL when it is a directory)",
    )
    g.add_argument(
        "--upload",
        action=_FileOp,
        const="upload",
        nargs=2,
        metavar=("LOCAL", "REMOTE"),
        dest="file_ops",
        help="copy a file or folder to REMOTE on the host (into REMOTE when it is a directory)",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="replace files that exist on the receiving side"
    )
    g.add_argument(
        "--show-hidden", action="store_true", help="include hidden (dot) files in lists and copies"
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _print_listing(d: pb.FileDirectory) -> None:
    for e in d.entries:
        kind = _TYPE_NAMES.get(e.entry_type, "link")
        print(f"{kind}\t{e.size}\t{_iso(e.modified_time)}\t{e.name}")


def _listing_json(d: pb.FileDirectory) -> dict[str, Any]:
    return {
        "path": d.path,
        "entries": [
            {
                "name": e.name,
                "size": e.size,
                "is_dir": e.entry_type in _DIR_TYPES,
                "mtime": e.modified_time,
            }
            for e in d.entries
        ],
    }


def _progress_bar(label: str) -> tuple[Callable[[ProgressEvent], None] | None, Callable[[], None]]:
    """A tqdm bar on stderr when it is a terminal: (progress callback, close)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm  # type: ignore[import-untyped]

    bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def progress(ev: ProgressEvent) -> None:
        if bar.total != ev.total_size:
            bar.total = ev.total_size
        if ev.name != bar.postfix:
            bar.set_postfix_str(ev.name[-40:], refresh=False)
        # update() redraws at most every mininterval: cheap per block.
        bar.update(ev.total_done - bar.n)

    return progress, bar.close


async def _transfer(
    reactor: Any, client: FileClient, op: tuple[str, ...], args: argparse.Namespace
) -> dict[str, Any]:
    kind, a, b = op
    progress, close = _progress_bar(f"{kind} {Path(a).name or a}")
    t0 = reactor.seconds()
    options = {"overwrite": args.overwrite, "include_hidden": args.show_hidden}
    transfer: Transfer
    if kind == "download":
        transfer = client.download(a, Path(b), progress=progress, **options)
        remote, local = a, b
    else:
        transfer = client.upload(Path(a), b, progress=progress, **options)
        remote, local = b, a
    try:
        result = await transfer.done
    finally:
        close()
    seconds = reactor.seconds() - t0
    _log.info(
        "{kind} {remote}: {files} files, {bytes} bytes ({resumed} resumed), {skipped} skipped",
        kind=kind,
        remote=remote,
        files=result.files,
        bytes=result.bytes,
        resumed=result.resumed,
        skipped=len(result.skipped),
    )
    if result.skipped and not args.overwrite:
        where = "on the host" if kind == "upload" else "here"
        raise FileTransferError(f"exists {where} (use --overwrite): {result.skipped[0]}")
    return {
        "direction": kind,
        "remote": remote,
        "local": local,
        "target": result.target,
        "bytes": result.bytes,
        "resumed": result.resumed,
        "files": result.files,
        "skipped": result.skipped,
        "seconds": round(seconds, 3),
    }


async def run_file_session(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Log in for file transfer, perform C{args.file_ops} in order; the stats.

    @raise FileTransferError: an action failed (the host's reason, or ours).
    """
    password = read_password(args)
    session = ViewerSession(
        reactor,
        args.target,
        password,
        file_transfer=pb.FileTransfer(dir="", show_hidden=args.show_hidden),
    )
    client = FileClient(session, reactor)
    path = await connect(reactor, args, session)
    await with_timeout(reactor, session.logged_in, args.timeout, "the login")
    stats: dict[str, Any] = {
        "path": path,
        "protocol": session_protocol(session),
        "ls": [],
        "transfers": [],
    }
    for op in args.file_ops:
        if op[0] == "ls":
            listing = await client.list_dir(op[1], include_hidden=args.show_hidden)
            if args.stats_json:
                stats["ls"].append(_listing_json(listing))
            else:
                _print_listing(listing)
        else:
            stats["transfers"].append(await _transfer(reactor, client, op, args))
    session.disconnect()
    await with_timeout(reactor, session.ended, 5.0, "the disconnect")
    return stats
