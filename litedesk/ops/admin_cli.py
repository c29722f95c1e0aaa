"""C{litedesk-admin}: manage the server's API and console users from a shell.

    litedesk-admin --data-dir DIR user add NAME [--admin]   (password on stdin)
    litedesk-admin --data-dir DIR user list
    litedesk-admin --data-dir DIR user disable NAME | enable NAME
    litedesk-admin --data-dir DIR user passwd NAME          (password on stdin)
    litedesk-admin --data-dir DIR user admin NAME | no-admin NAME
    litedesk-admin --data-dir DIR user delete NAME
    litedesk-admin --data-dir DIR user sign-out NAME        (ends every token)
    litedesk-admin --data-dir DIR migrate --to postgresql://... [--force]
                                    (copies db_v2.sqlite3's peers to PostgreSQL)

It writes the ops database directly (the server may be running: it picks
the change up within seconds, see L{litedesk.ops.accounts}).  Passwords are
read from standard input, never from the command line (where C{ps} and the
shell history would show them): the first line of a pipe, or typed twice at
a terminal without echo.  C{migrate} takes its URL from C{LITEDESK_DATABASE}
when C{--to} is not given, so the password can stay out of C{ps}
(L{litedesk.rendezvous.pg_migrate}).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from litedesk.ops import users as u
from litedesk.ops.opsdb import OPS_DB_FILE, chown_like_dir, connect, ensure_schema

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="litedesk-admin",
        description="Manage the users of a LiteDesk server's API and console.",
    )
    p.add_argument(
        "--data-dir",
        "-d",
        default=".",
        help="the server's --data-dir (holds ops.sqlite3) [default: .]",
    )
    sub = p.add_subparsers(dest="area", required=True)
    user = sub.add_parser("user", help="add, list, change users").add_subparsers(
        dest="action", required=True
    )
    add = user.add_parser("add", help="add a user; the password is read from standard input")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may use the web console's admin pages")
    user.add_parser("list", help="list users")
    for action, text in (
        ("disable", "disable a user (ends its sign-ins)"),
        ("enable", "enable a disabled user"),
        ("passwd", "set a new password, read from standard input (ends its sign-ins)"),
        ("admin", "make a user an administrator"),
        ("no-admin", "make an administrator a plain user"),
        ("delete", "delete a user"),
        ("sign-out", "end every sign-in of a user"),
    ):
        user.add_parser(action, help=text).add_argument("name")
    mig = sub.add_parser("migrate", help="copy the SQLite peer table into PostgreSQL")
    mig.add_argument(
        "--to",
        default=os.environ.get("LITEDESK_DATABASE", ""),
        help="postgresql://USER:PASS@HOST/DB [default: $LITEDESK_DATABASE]",
    )
    mig.add_argument(
        "--force",
        action="store_true",
        help="replace target rows that hold a source row's id or guid for another peer",
    )
    return p


def _migrate(args: argparse.Namespace, data_dir: Path, out: TextIO) -> int:
    """C{migrate}: db_v2.sqlite3 in C{data_dir} to C{args.to}; prints the counts."""
    source = data_dir / "db_v2.sqlite3"
    if not args.to.startswith(("postgresql://", "postgres://")):
        print("litedesk-admin: migrate: --to takes a postgresql:// URL", file=sys.stderr)
        return 1
    if not source.is_file():
        print(f"litedesk-admin: migrate: {source}: no such file", file=sys.stderr)
        return 1
    try:
        import psycopg

        from litedesk.rendezvous import pg_migrate
        from litedesk.rendezvous.db_url import redact_url
    except ImportError as e:
        print(f"litedesk-admin: migrate needs litedesk[postgresql]: {e}", file=sys.stderr)
        return 1
    target = redact_url(args.to)
    try:
        counts = pg_migrate.migrate(source, args.to, force=args.force, out=out)
    except pg_migrate.MigrationConflict as e:
        print(f"litedesk-admin: migrate: nothing written: {e}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        print(f"litedesk-admin: migrate: {source}: {e}", file=sys.stderr)
        return 1
    except psycopg.Error as e:
        print(f"litedesk-admin: migrate: {target}: nothing written: {e}", file=sys.stderr)
        return 1
    print(f"migrated {source} to {target}: {counts}", file=out)
    return 0


def _read_password(stdin: TextIO, prompt: Callable[[str], str]) -> str:
    if stdin.isatty():
        first = prompt("New password: ")
        if prompt("Again: ") != first:
            raise u.UserError("the passwords differ")
        return first
    line = stdin.readline()
    if not line:
        raise u.UserError("no password on standard input")
    return line.rstrip("\r\n")


def _list(conn: sqlite3.Connection, out: TextIO) -> None:
    tokens = dict(conn.execute("SELECT user, count(*) FROM ops_token GROUP BY user").fetchall())
    print(f"{'NAME':<24} {'ADMIN':<6} {'STATE':<9} {'SIGN-INS':>8}  CREATED", file=out)
    for x in u.list_users(conn):
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(x.created_at))
        state = "disabled" if x.disabled else "enabled"
        admin = "yes" if x.is_admin else "no"
        count = tokens.get(x.name, 0)
        print(f"{x.name:<24} {admin:<6} {state:<9} {count:>8}  {created}", file=out)


def _run(
    args: argparse.Namespace,
    conn: sqlite3.Connection,
    stdin: TextIO,
    out: TextIO,
    prompt: Callable[[str], str],
) -> str:
    name = getattr(args, "name", "")
    match args.action:
        case "list":
            _list(conn, out)
            return ""
        case "add":
            u.add_user(conn, name, _read_password(stdin, prompt), admin=args.admin)
            return f"added {'administrator' if args.admin else 'user'} {name}"
        case "passwd":
            u.set_password(conn, name, _read_password(stdin, prompt))
            return f"new password for {name}; its sign-ins ended"
        case "disable" | "enable":
            u.set_disabled(conn, name, args.action == "disable")
            return f"{args.action}d {name}"
        case "admin" | "no-admin":
            u.set_admin(conn, name, args.action == "admin")
            return f"{name} is {'an administrator' if args.action == 'admin' else 'a plain user'}"
        case "delete":
            u.delete_user(conn, name)
            return f"deleted {name}"
        case _:  # sign-out
            if name.casefold() not in {x.name.casefold() for x in u.list_users(conn)}:
                raise u.UserError(f"no user {name!r}")
            return f"ended {u.revoke_user_tokens(conn, name)} sign-ins of {name}"


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin if stdin is not None else sys.stdin
    out = out if out is not None else sys.stdout
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"litedesk-admin: {data_dir}: no such directory", file=sys.stderr)
        return 1
    if args.area == "migrate":
        return _migrate(args, data_dir, out)
    try:
        with contextlib.closing(connect(data_dir / OPS_DB_FILE)) as conn:
            ensure_schema(conn, u.SCHEMA)
            with conn:
                said = _run(args, conn, stdin, out, prompt)
        chown_like_dir(data_dir / OPS_DB_FILE)
    except u.UserError as e:
        print(f"litedesk-admin: {e}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as e:
        print(f"litedesk-admin: {data_dir / OPS_DB_FILE}: {e}", file=sys.stderr)
        return 1
    if said:
        print(said, file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
