"""C{/lists}: edit the relay's block list and black list in the browser.

Each list is a form with the file's text; saving checks every line the way
the relay reads it (L{litedesk.console.lists.check_list}) and writes
nothing unless all are right, then replaces the file atomically
(L{litedesk.console.lists.save_list}, in a thread: it fsyncs).  The relay
notices the new file within a second and applies it: a blocked address's
open connections are closed at once.

Two administrators editing at once: the form carries the digest of the
text it showed, and a save over a file that changed since is refused
(the page shows the current text), so nobody's edit is lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.template import Flattenable, Tag, tags

from litedesk.console.lists import (
    LISTS,
    MAX_LIST_BYTES,
    MAX_LIST_FORM_BYTES,
    MAX_SHOWN_ERRORS,
    AddressList,
    LineError,
    ListFile,
    check_list,
    read_list,
    save_list,
    submitted_text,
)
from litedesk.console.page import Form, FormError, Page, View

__all__ = ["ListsPage"]

_log = Logger()

#: Characters of a wrong line shown (the line number finds the rest).
_SHOWN_LINE = 80


@dataclass(frozen=True)
class _Draft:
    """A submission shown again instead of the file: its text and what is wrong."""

    text: str
    errors: list[LineError]


class ListsPage(Page):
    """The relay's blocklist.txt and blacklist.txt, shown and edited."""

    path = "lists"
    title = "Block lists"
    max_form_bytes = MAX_LIST_FORM_BYTES

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        reactor = self.ctx.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    def _loaded(self, lst: AddressList) -> str:
        service = self.ctx.top.relay
        if service is None:
            return "This server runs no relay (--no-relay): the list has no effect here."
        relay = service.relay
        held = relay.table.blocklist if lst.name == "blocklist" else relay.blacklist
        n = len(held)
        return f"The relay holds {n} address{'' if n == 1 else 'es'} from it now."

    async def get(self, view: View, drafts: dict[str, _Draft] | None = None) -> Flattenable:
        out: list[Tag] = [
            tags.p(
                "One IP address per line; anything after the first space is a comment, "
                "as are lines starting with #. The relay reloads a saved list within a second.",
                class_="summary",
            )
        ]
        for lst in LISTS.values():
            current: ListFile = await self._in_thread(read_list, self.ctx.data_dir / lst.file)
            draft = (drafts or {}).get(lst.name)
            out += self._section(view, lst, current, draft)
        return out

    def _section(
        self, view: View, lst: AddressList, current: ListFile, draft: _Draft | None
    ) -> list[Tag]:
        out = [
            tags.h2(lst.title, id=lst.name),
            tags.p(f"{lst.effect} {self._loaded(lst)}", class_="summary"),
        ]
        if draft is not None and draft.errors:
            out.append(_error_list(draft.errors))
        text = draft.text if draft is not None else current.text
        area = tags.textarea(text, name="text", rows="12", cols="60", id=f"{lst.name}-text")
        if current.too_big:
            out.append(
                tags.p(
                    f"{lst.file} is larger than {MAX_LIST_BYTES // 1024} KiB: shown in part, "
                    "edit it on the server.",
                    class_="notice error",
                )
            )
            return [*out, area(readonly="readonly")]
        out.append(
            view.form(
                "/lists",
                tags.input(type="hidden", name="list", value=lst.name),
                tags.input(type="hidden", name="base", value=current.digest),
                area,
                tags.p(tags.button(f"Save the {lst.title.lower()}", type="submit")),
                id=f"{lst.name}-form",
            )
        )
        return out

    async def post(self, view: View, form: Form) -> Flattenable:
        lst = LISTS.get(form.get("list"))
        if lst is None:
            raise FormError("no such list")
        base = form.get("base", "")
        args = view.request.args or {}
        try:
            text = submitted_text((args.get(b"text") or [b""])[0])
        except ValueError as e:
            raise FormError(str(e)) from None
        errors = check_list(text)
        if errors:
            view.error(
                f"{len(errors)} line(s) of the {lst.title.lower()} cannot match any address; "
                "nothing was saved. Correct them and save again."
            )
            return await self.get(view, {lst.name: _Draft(text, errors)})
        path = self.ctx.data_dir / lst.file
        current: ListFile = await self._in_thread(read_list, path)
        if current.too_big:
            raise FormError(f"{lst.file} is too large to edit here; nothing was saved")
        if base != current.digest:
            view.error(
                f"The {lst.title.lower()} changed since this page was shown (another "
                "administrator, or an edit on the server); nothing was saved. This is the "
                "current list: make your change again."
            )
            return await self.get(view)
        try:
            await self._in_thread(save_list, path, text)
        except OSError as e:
            _log.error("Console: saving {path} failed: {error}", path=str(path), error=str(e))
            view.error(f"{lst.file} could not be written: {e.strerror or e}", 500)
            return await self.get(view, {lst.name: _Draft(text, [])})
        _log.info(
            "Console: {user} saved {path} ({size} bytes)",
            user=view.user.name,
            path=str(path),
            size=len(text.encode("utf-8")),
        )
        view.notice(f"Saved {lst.file}; the relay applies it within a second.")
        return await self.get(view)


def _error_list(errors: list[LineError]) -> Tag:
    items = [
        tags.li(f"Line {e.number}: {e.text.strip()[:_SHOWN_LINE]!r}: {e.reason}")
        for e in errors[:MAX_SHOWN_ERRORS]
    ]
    if len(errors) > MAX_SHOWN_ERRORS:
        items.append(tags.li(f"... and {len(errors) - MAX_SHOWN_ERRORS} more."))
    return tags.ul(*items, class_="line-errors", role="alert")
