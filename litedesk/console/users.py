"""C{/users}: the console's user administration.

The same changes as C{litedesk-admin user ...}, made through
L{litedesk.ops.accounts.Accounts} so the server's in-memory copy follows at
once: add (name, password, administrator or not), disable / enable, make
or unmake an administrator, a new password, sign out everywhere, delete.
Every change is one POST form with the session's CSRF field (checked by the
framework).  An administrator cannot disable, delete or demote their own
account, so the console always keeps at least the one administrator using
it.  L{litedesk.ops.users.UserError} (name taken, password too short, no
such user) is shown as it is worded.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.logger import Logger
from twisted.web.template import Flattenable, Tag, tags

from litedesk.console.page import Form, FormError, Page, View
from litedesk.console.widgets import table
from litedesk.ops.users import User, UserError

__all__ = ["UsersPage"]

_log = Logger()

#: The form's C{action} field -> what it does and whether it may target oneself.
_ACTIONS = ("add", "disable", "enable", "admin", "not-admin", "password", "sign-out", "delete")
_NOT_ON_ONESELF = {
    "disable": "You cannot disable your own account.",
    "delete": "You cannot delete your own account.",
    "not-admin": "You cannot take your own administrator rights away.",
}


def _live_tokens(now: float) -> Any:
    def count(conn: sqlite3.Connection) -> dict[str, int]:
        rows = conn.execute(
            "SELECT user, COUNT(*) FROM ops_token WHERE expires_at > ? GROUP BY user", (now,)
        )
        return {str(u).casefold(): int(n) for u, n in rows}

    return count


class UsersPage(Page):
    path = "users"
    title = "Users"

    async def get(self, view: View) -> Flattenable:
        live = await self.ctx.db.run(_live_tokens(view.now()))
        rows = [
            self._row(view, user, live.get(user.name.casefold(), 0))
            for user in self.ctx.accounts.users()
        ]
        return [
            table(
                ["Name", "Administrator", "State", "Live sign-ins", "Actions"],
                rows,
                empty="No users yet.",
                id="users",
            ),
            tags.h2("Add a user"),
            self._add_form(view),
        ]

    def _row(self, view: View, user: User, live: int) -> list[Flattenable]:
        def button(action: str, label: str, *extra: Tag) -> Tag:
            return view.form(
                "/users",
                tags.input(type="hidden", name="user", value=user.name),
                tags.input(type="hidden", name="action", value=action),
                *extra,
                tags.button(label, type="submit", name="do", value=action),
                class_="inline",
            )

        actions = [
            button("enable", "Enable") if user.disabled else button("disable", "Disable"),
            button("not-admin", "Not administrator")
            if user.is_admin
            else button("admin", "Make administrator"),
            button(
                "password",
                "Set password",
                tags.input(
                    type="password",
                    name="password",
                    autocomplete="new-password",
                    minlength="8",
                    maxlength="1024",
                    placeholder="new password",
                    required="required",
                    **{"aria-label": f"New password for {user.name}"},
                ),
            ),
            button("sign-out", "Sign out everywhere"),
            button("delete", "Delete"),
        ]
        return [
            tags.span(user.name, class_="name"),
            "yes" if user.is_admin else "no",
            "disabled" if user.disabled else "enabled",
            str(live),
            tags.div(*actions, class_="actions"),
        ]

    def _add_form(self, view: View) -> Tag:
        return view.form(
            "/users",
            tags.input(type="hidden", name="action", value="add"),
            tags.label("Name", for_="new-name"),
            tags.input(
                id="new-name", name="user", type="text", maxlength="64", required="required"
            ),
            tags.label("Password", for_="new-password"),
            tags.input(
                id="new-password",
                name="password",
                type="password",
                autocomplete="new-password",
                minlength="8",
                maxlength="1024",
                required="required",
            ),
            tags.label(
                tags.input(type="checkbox", name="admin", value="1", id="new-admin"),
                " Administrator",
                class_="check",
            ),
            tags.button("Add user", type="submit", id="add-user"),
            id="add-user-form",
            class_="stacked",
        )

    async def post(self, view: View, form: Form) -> Flattenable:
        action = form.get("action")
        name = form.get("user")
        if action not in _ACTIONS:
            raise FormError(f"unknown action {action!r}")
        myself = name.casefold() == view.user.name.casefold()
        if myself and action in _NOT_ON_ONESELF:
            view.error(_NOT_ON_ONESELF[action], 409)
            return await self.get(view)
        try:
            done = await self._change(action, name, form)
        except UserError as e:
            view.error(f"Not done: {e}.")
        else:
            _log.info(
                "Console: {admin} did {action} on user {user!r}",
                admin=view.user.name,
                action=action,
                user=name,
            )
            view.notice(done)
            if myself and action in ("password", "sign-out"):
                view.notice("That ended your own session too: sign in again.")
        return await self.get(view)

    async def _change(self, action: str, name: str, form: Form) -> str:
        """Make the change; what to tell the administrator (L{UserError} if refused)."""
        accounts = self.ctx.accounts
        if action == "add":
            await accounts.add_user(name, form.get("password"), admin=form.flag("admin"))
            return f"User {name} added."
        if action in ("disable", "enable"):
            await accounts.set_disabled(name, action == "disable")
            return f"User {name} {action}d."
        if action in ("admin", "not-admin"):
            await accounts.set_admin(name, action == "admin")
            return f"{name} is {'now' if action == 'admin' else 'no longer'} an administrator."
        if action == "password":
            await accounts.set_password(name, form.get("password"))
            return f"New password set for {name}; their sign-ins ended."
        if action == "sign-out":
            if accounts.get(name) is None:
                raise UserError(f"no user {name!r}")
            count = await accounts.revoke_user_tokens(name)
            return f"{name} signed out everywhere ({count} sign-ins ended)."
        await accounts.delete_user(name)
        return f"User {name} deleted."
