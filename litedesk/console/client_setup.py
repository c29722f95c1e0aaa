"""C{/setup}: what to type into a RustDesk app to use this server.

The server's public key, and the whole configuration in the three forms the
apps take (L{litedesk.ops.client_config}; RustDesk's src/custom_server.rs
and flutter's server-settings import): the config string to paste into
the app's "ID/Relay server" import, the C{rustdesk --config} command for an
installed client, the Windows installer file name that carries the
settings, and the QR code the mobile apps scan.  The QR code is an SVG in
a C{data:} URI (the CSP allows C{data:} images), so no markup from a
library is pasted into the page.  The key is the administrator's own
(C{--key}), but it is escaped like everything else.
"""

from __future__ import annotations

from twisted.web.template import Flattenable, Tag, tags

from litedesk.console.page import Page, View

__all__ = ["ClientSetupPage"]


def _value(id: str, label: str, value: str, note: str = "") -> list[Tag]:
    out = [
        tags.h2(label),
        tags.pre(tags.code(value, id=id), class_="copy"),
    ]
    if note:
        out.append(tags.p(note, class_="note"))
    return out


class ClientSetupPage(Page):
    path = "setup"
    title = "Client setup"

    async def get(self, view: View) -> Flattenable:
        config = self.ctx.client_config
        if config is None:
            return tags.p(
                "This server has no key clients can type (see the start-up log), "
                "so there is no client configuration to show.",
                class_="empty",
            )
        # segno's data URI is a standalone SVG document (with its xmlns,
        # which an <img> needs; the inline form of qr_svg() has none).
        qr_uri = config.qr_code().svg_data_uri(scale=4, dark="#000", light="#fff")
        out: list[Flattenable] = [
            tags.p(
                "In the RustDesk app: Settings, Network, ID/Relay server. Paste the "
                "config string with the import button, scan the QR code in the "
                "mobile app, or type the fields below."
            ),
            tags.dl(class_="settings")(
                tags.dt("ID server"),
                tags.dd(config.host, id="id-server"),
                tags.dt("Relay server"),
                tags.dd(config.relay or "(leave empty)", id="relay-server"),
                tags.dt("API server"),
                tags.dd(config.api or self.ctx.api_url or "(leave empty)", id="api-server"),
                tags.dt("Key"),
                tags.dd(tags.code(config.key, id="key")),
            ),
            *_value("config-string", "Config string", config.string()),
            *_value(
                "config-command",
                "Command line (installed client, as administrator)",
                config.command(),
            ),
            *_value(
                "installer-name",
                "Windows installer name",
                config.installer_name(),
                "Rename the downloaded RustDesk installer to this name and it "
                "starts with these settings.",
            ),
            tags.h2("QR code (mobile apps)"),
            tags.img(
                src=qr_uri,
                alt="QR code of the client configuration",
                id="config-qr",
                class_="qr",
            ),
        ]
        if config.api_port_dropped():
            out.insert(
                0,
                tags.p(
                    "Stock RustDesk clients reach an https API server given on port "
                    "21114 at port 443 instead: serve HTTPS on another port or on 443.",
                    class_="notice error",
                ),
            )
        return out
