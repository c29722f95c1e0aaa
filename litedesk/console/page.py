"""The console's page framework: one signed-in page, its request, its layout.

A page is a L{Page} subclass (what to show, what a POST does); the
framework wraps it in a L{PageResource} that does everything a page must
never forget: the security headers, the administrator's session (else a
redirect to C{/login}), the CSRF check before any POST, a bound on the
form's size, a 500 page (and a log line) when the page fails, and the
common layout (C{templates/layout.xml}: title, navigation, sign-out form,
notices).  How to write a page: see L{litedesk.console.root}.

Rendering is twisted.web.template: the layout is an L{XMLFile} template and
pages return any flattenable value (a L{tags} tree, an L{Element} with its
own template, a string).  The flattener escapes every string and attribute
value, which matters here: host names, peer ids and user names come from
strangers.  Pages are C{async} because most of them wait for the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import (
    Element,
    Flattenable,
    Tag,
    XMLFile,
    flattenString,
    renderer,
    tags,
)

from litedesk.console.bandwidth import BandwidthSampler
from litedesk.console.security import SESSION_COOKIE, CsrfKeys, secure_headers
from litedesk.ops.context import OpsContext
from litedesk.ops.users import User

__all__ = [
    "MAX_FORM_BYTES",
    "Console",
    "Form",
    "FormError",
    "Page",
    "PageResource",
    "View",
    "finish_with",
    "redirect",
    "template",
    "write_page",
]

#: A console form is a few short fields; anything bigger is refused unread.
MAX_FORM_BYTES = 64 * 1024
#: The longest value a form field may have (passwords are cut at 1024 anyway).
MAX_FIELD_CHARS = 4096

_log = Logger()


def template(name: str) -> XMLFile:
    """The loader of C{litedesk/console/templates/NAME} (package data)."""
    return XMLFile(FilePath(str(files("litedesk.console") / "templates" / name)))


@dataclass
class Console:
    """What every page and the sign-in pages share.

    @ivar ctx: the server's parts (L{OpsContext}).
    @ivar csrf: the per-process CSRF secret.
    @ivar nav: the navigation bar: (URL path, title) of each listed page.
    @ivar started: when the console was built (the dashboard's uptime).
    @ivar bandwidth: the relay's bytes sampled over 24 h (C{None} until
        L{litedesk.console.root.make_console} sets it).
    """

    ctx: OpsContext
    csrf: CsrfKeys = field(default_factory=CsrfKeys)
    nav: list[tuple[str, str]] = field(default_factory=list)
    started: float = 0.0
    bandwidth: BandwidthSampler | None = None

    def now(self) -> float:
        return float(self.ctx.reactor.seconds())

    def session(self, request: Any) -> tuple[str, User] | None:
        """The session token and its user, if it is a live administrator's."""
        raw = request.getCookie(SESSION_COOKIE)
        if not raw:
            return None
        token = raw.decode("ascii", "replace")
        # Only a console sign-in's token: not one a RustDesk app holds.
        user = self.ctx.accounts.user_for_token(token, kind="console")
        if user is None or not user.is_admin:
            return None
        return token, user


class FormError(Exception):
    """A form field is missing or malformed; the text is for the administrator."""


class Form:
    """A POSTed form's fields (application/x-www-form-urlencoded), as text."""

    def __init__(self, args: dict[bytes, list[bytes]]) -> None:
        self._args = args

    def get(self, name: str, default: str | None = None) -> str:
        """Field C{name}'s first value; L{FormError} if absent (and no default)."""
        values = self._args.get(name.encode("ascii"))
        if not values:
            if default is None:
                raise FormError(f"the form lacks the field {name!r}")
            return default
        try:
            text = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"the field {name!r} is not UTF-8 text") from None
        if len(text) > MAX_FIELD_CHARS:
            raise FormError(f"the field {name!r} is too long")
        return text

    def flag(self, name: str) -> bool:
        """A checkbox: present (any value) or not."""
        return bool(self._args.get(name.encode("ascii")))


@dataclass
class View:
    """One request to a signed-in page: who asks, and what the answer says.

    @ivar status: the HTTP status to answer with (L{error} sets 400).
    @ivar notices: (kind, text) shown above the content; kind C{ok} or C{error}.
    """

    console: Console
    request: Any
    user: User
    token: str
    status: int = 200
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ctx(self) -> OpsContext:
        return self.console.ctx

    @property
    def csrf(self) -> str:
        return self.console.csrf.for_session(self.token)

    def now(self) -> float:
        return self.console.now()

    def client_ip(self) -> str:
        address = self.request.getClientAddress()
        return str(getattr(address, "host", "")) or "unknown"

    def notice(self, text: str) -> None:
        self.notices.append(("ok", text))

    def error(self, text: str, status: int = 400) -> None:
        self.notices.append(("error", text))
        self.status = status

    def form(self, action: str, *children: Flattenable, **attrs: str) -> Tag:
        """A POST form to C{action} carrying this session's CSRF field."""
        return tags.form(method="post", action=action, **attrs)(
            tags.input(type="hidden", name="csrf", value=self.csrf), *children
        )


class Page:
    """A signed-in console page at C{/PATH}: subclass, set the class
    attributes, write L{get} (and L{post} if it has forms).

    @cvar path: the URL segment (C{""} is the dashboard at C{/}).
    @cvar title: the heading, the window title and the navigation link.
    @cvar in_nav: listed in the navigation bar.
    @cvar max_form_bytes: the largest POST body it takes (the list editor's is larger).
    """

    path: ClassVar[str] = ""
    title: ClassVar[str] = ""
    in_nav: ClassVar[bool] = True
    max_form_bytes: ClassVar[int] = MAX_FORM_BYTES

    def __init__(self, console: Console) -> None:
        self.console = console
        self.ctx = console.ctx

    async def get(self, view: View) -> Flattenable:
        """The page's content (inside the layout's C{<main>})."""
        raise NotImplementedError

    async def post(self, view: View, form: Form) -> Flattenable:
        """Do what the form asks (its CSRF field is already checked), then
        return the content to show, usually C{await self.get(view)} after
        L{View.notice} or L{View.error}."""
        view.error("This page has no forms.", 405)
        return ""


class _Layout(Element):
    loader = template("layout.xml")

    def __init__(
        self,
        title: str,
        content: Flattenable,
        notices: Sequence[tuple[str, str]],
        nav: Sequence[tuple[str, str]],
        current: str | None,
        signed_in: tuple[User, str] | None,
    ) -> None:
        super().__init__()
        self._title = title
        self._content = content
        self._notices = notices
        self._nav = nav
        self._current = current
        self._signed_in = signed_in

    @renderer
    def title(self, request: Any, tag: Tag) -> Flattenable:
        return tag(self._title)

    @renderer
    def nav(self, request: Any, tag: Tag) -> Flattenable:
        if self._signed_in is None:
            return ""
        links = []
        for path, title in self._nav:
            attrs = {"aria-current": "page"} if path == self._current else {}
            links.append(tags.li(tags.a(title, href="/" + path, **attrs)))
        return tag(tags.ul(*links))

    @renderer
    def account(self, request: Any, tag: Tag) -> Flattenable:
        if self._signed_in is None:
            return ""
        user, csrf = self._signed_in
        return tag(
            tags.span(user.name, class_="who"),
            tags.form(method="post", action="/logout", class_="inline")(
                tags.input(type="hidden", name="csrf", value=csrf),
                tags.button("Sign out", type="submit", id="sign-out"),
            ),
        )

    @renderer
    def notices(self, request: Any, tag: Tag) -> Flattenable:
        return [
            tags.p(text, class_=f"notice {kind}", role="alert" if kind == "error" else "status")
            for kind, text in self._notices
        ]

    @renderer
    def content(self, request: Any, tag: Tag) -> Flattenable:
        return self._content


def write_page(
    request: Any,
    console: Console,
    *,
    title: str,
    content: Flattenable,
    status: int = 200,
    notices: Iterable[tuple[str, str]] = (),
    view: View | None = None,
    current: str | None = None,
) -> Deferred[None]:
    """Render the layout around C{content} and finish C{request}.

    @param view: the signed-in request (shows navigation and sign-out);
        C{None} for the sign-in and error pages.
    """
    signed_in = (view.user, view.csrf) if view is not None else None
    element = _Layout(title, content, list(notices), console.nav, current, signed_in)
    d = flattenString(request, element)

    def write(body: bytes) -> None:
        secure_headers(request)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        finish_with(request, b"<!DOCTYPE html>\n" + body)

    return d.addCallback(write)


def finish_with(request: Any, body: bytes) -> None:
    """Write C{body} and finish, unless the browser has already gone."""
    if getattr(request, "_disconnected", False) or getattr(request, "finished", False):
        return  # the browser left; nothing to write to
    request.write(body)
    request.finish()


def redirect(request: Any, location: bytes) -> bytes:
    """A 303 to C{location} (a local path), with the console's headers."""
    secure_headers(request)
    request.setResponseCode(303)
    request.setHeader(b"location", location)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"See " + location + b"\n"


def plain_error(request: Any, console: Console, status: int, title: str, text: str) -> Any:
    """An error page (no navigation): for the resource's C{render}."""
    write_page(request, console, title=title, content=tags.p(text), status=status).addErrback(
        _failed_render, request
    )
    return NOT_DONE_YET


def _failed_render(failure: Failure, request: Any) -> None:
    _log.failure("Console page could not be rendered", failure)
    if not getattr(request, "finished", False) and not getattr(request, "startedWriting", 0):
        secure_headers(request)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        finish_with(request, b"The console failed to render this page; the server log says why.\n")


def form_too_big(request: Any, limit: int = MAX_FORM_BYTES) -> bool:
    content = request.content
    if content is None:
        return False
    if getattr(content, "overflowed", False):
        return True  # BoundedRequest kept only the start of the body
    content.seek(0, 2)
    size: int = content.tell()
    content.seek(0)
    return size > limit


class PageResource(Resource):
    """A L{Page} on the web: session, CSRF, size limit, layout, failures."""

    isLeaf = True

    def __init__(self, page: Page) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.page = page
        self.console = page.console

    def render(self, request: Any) -> Any:
        if request.postpath not in ([], [b""]):
            return plain_error(request, self.console, 404, "Not found", "No such page.")
        session = self.console.session(request)
        if session is None:
            return redirect(request, b"/login")
        method = request.method
        if method not in (b"GET", b"HEAD", b"POST"):
            request.setHeader(b"allow", b"GET, HEAD, POST")
            return plain_error(request, self.console, 405, "Not allowed", "Use GET or POST.")
        view = View(self.console, request, session[1], session[0])
        if method == b"POST":
            refusal = self._refuse_post(view)
            if refusal is not None:
                return plain_error(request, self.console, *refusal)
        d = ensureDeferred(self._serve(view))
        d.addErrback(self._failed, view)
        return NOT_DONE_YET

    def _refuse_post(self, view: View) -> tuple[int, str, str] | None:
        request = view.request
        if form_too_big(request, self.page.max_form_bytes):
            return 413, "Form too large", "This form is larger than any console form."
        args = request.args or {}
        field = args.get(b"csrf", [b""])[0].decode("ascii", "replace")
        if not self.console.csrf.session_ok(view.token, field):
            _log.warn(
                "Console POST to {path} by {user} from {ip} refused: missing or wrong CSRF field",
                path=request.path.decode("ascii", "replace"),
                user=view.user.name,
                ip=view.client_ip(),
            )
            return (
                403,
                "Form refused",
                "This form did not come from this console page (or the server "
                "restarted since it was shown). Go back, reload the page and try again.",
            )
        return None

    async def _serve(self, view: View) -> None:
        if view.request.method == b"POST":
            try:
                content = await self.page.post(view, Form(view.request.args or {}))
            except FormError as e:
                view.error(str(e))
                content = await self.page.get(view)
        else:
            content = await self.page.get(view)
        await write_page(
            view.request,
            self.console,
            title=self.page.title,
            content=content,
            status=view.status,
            notices=view.notices,
            view=view,
            current=self.page.path,
        )

    def _failed(self, failure: Failure, view: View) -> None:
        _log.failure(
            "Console page {path} failed for {user}",
            failure,
            path=self.page.path,
            user=view.user.name,
        )
        d = write_page(
            view.request,
            self.console,
            title="Error",
            content=tags.p("This page failed; the server log has the details."),
            status=500,
        )
        d.addErrback(_failed_render, view.request)
