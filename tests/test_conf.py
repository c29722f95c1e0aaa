"""The shipped example configuration, systemd unit and install script fit together."""

from __future__ import annotations

import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

CONF = Path(__file__).resolve().parent.parent / "conf"
EXAMPLE = CONF / "litedesk-relay.conf.example"
UNIT = CONF / "litedesk-relay.service"
INSTALL = CONF / "install-server.sh"


def _relay_options_class() -> Any:
    # Found as twistd finds it, so the test follows the Options class wherever
    # the server assembly keeps it.
    (maker,) = [p for p in getPlugins(IServiceMaker) if p.tapname == "litedesk-relay"]
    return maker.options


Options = _relay_options_class()

# A commented-out setting is "#name = value"; prose comments are "# text".
COMMENTED_SETTING = re.compile(r"^#(?=[a-z][a-z_-]*\s*=)", re.MULTILINE)


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            name, _, value = line.partition("=")
            settings.setdefault(name.strip(), []).append(value.strip())
    return settings


def _exec_start() -> list[str]:
    (command,) = _unit_settings()["ExecStart"]
    return shlex.split(command)


def _parse(path: Path) -> Any:
    options = Options()
    options.parseOptions(["--config", str(path)])
    return options


def _parse_empty() -> Any:
    options = Options()
    options.parseOptions([])
    return options


class ExampleConfigTests(SynchronousTestCase):
    def test_example_parses_with_defaults(self) -> None:
        """The example configuration is accepted by --config as shipped and only moves
        the data directory to /var/lib/litedesk; every other setting keeps its default."""
        options = _parse(EXAMPLE)
        defaults = Options()
        defaults.parseOptions([])
        self.assertEqual(options["data-dir"], "/var/lib/litedesk")
        for name in defaults:
            if name not in ("config", "data-dir"):
                self.assertEqual(options[name], defaults[name], name)

    def test_every_example_setting_is_valid(self) -> None:
        """Uncommenting every "#name = value" line of the example still gives a
        configuration that --config accepts, so the documented values are usable."""
        text = COMMENTED_SETTING.sub("", EXAMPLE.read_text())
        path = Path(self.mktemp())
        path.write_text(text)
        options = _parse(path)
        self.assertEqual(options["port"], 21116)
        self.assertEqual(options["key"], "-")
        self.assertEqual(options["relay-servers"], "relay1.example.net,relay2.example.net:21117")

    def test_example_documents_every_option(self) -> None:
        """Every option of C{twistd litedesk-relay} (but --config, which names the
        file itself) appears in the example as a "name = value" line under its
        real name, so an operator finds each setting and its default there."""
        text = EXAMPLE.read_text()
        documented = set(re.findall(r"^#?([a-z][a-z_-]*)\s*=", text, re.MULTILINE))
        options = {p[0] for p in Options.optParameters} | {f[0] for f in Options.optFlags}
        self.assertEqual(sorted(documented - options), [], "not an option")
        self.assertEqual(sorted(options - documented - {"config"}), [], "not in the example")

    def test_example_shows_each_default(self) -> None:
        """Each commented-out "#name = value" shows the default that --help states
        for the option, so uncommenting a line changes nothing until its value is
        edited (relay-servers, rendezvous-servers, node-id and advertise, whose
        defaults depend on the machine, show example names; the
        endpoints and relay-port, derived from port, show what port 21116 gives)."""
        examples = {"relay-servers", "rendezvous-servers", "node-id", "advertise"}
        derived = {
            "udp-endpoint": "udp:21116:interface=::",
            "tcp-endpoint": "tcp6:21116:interface=::",
            "nat-endpoint": "tcp6:21115:interface=::",
            "relay-endpoint": "tcp6:21117:interface=::",
            "relay-port": "21117",
        }
        stated: dict[str, str | None] = {f[0]: "no" for f in Options.optFlags}
        for name, _short, default, doc, *_ in Options.optParameters:
            help_default = re.search(r"\[default: ([^];]*)", doc or "")
            text = help_default.group(1).strip() if help_default else default
            stated[name] = None if text is None else str(text).replace("\\:", ":")
        settings = re.findall(
            # [ \t], not \s: an empty value must not take the next line as its value.
            r"^#([a-z][a-z_-]*)[ \t]*=[ \t]*(.*?)[ \t]*$",
            EXAMPLE.read_text(),
            re.M,
        )
        self.assertTrue(settings)
        for name, value in settings:
            if name in examples:
                continue
            # The file escapes ':' inside endpoint strings.
            value = value.replace("\\:", ":")
            want = derived.get(name, stated[name])
            if want is not None and _is_number(want):
                self.assertEqual(float(value), float(want), name)
            else:
                self.assertEqual(value, want, name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SystemdUnitTests(SynchronousTestCase):
    def test_unit_runs_twistd_plugin(self) -> None:
        """The unit starts the twistd console script with the litedesk-relay plugin, in
        the foreground and without a pid file, and its plugin arguments parse."""
        argv = _exec_start()
        self.assertEqual(argv[0], "/opt/litedesk/bin/twistd")
        twistd_scripts = [
            ep.value for ep in entry_points(group="console_scripts") if ep.name == "twistd"
        ]
        self.assertIn("twisted.scripts.twistd:run", twistd_scripts)
        tapnames = {p.tapname for p in getPlugins(IServiceMaker)}
        self.assertIn("litedesk-relay", tapnames)
        plugin_at = argv.index("litedesk-relay")
        self.assertIn("--nodaemon", argv[1:plugin_at])
        self.assertIn("--pidfile=", argv[1:plugin_at])
        plugin_args = argv[plugin_at + 1 :]
        self.assertEqual(plugin_args[:2], ["--config", "/etc/litedesk/relay.conf"])
        Options().parseOptions(["--config", str(EXAMPLE), *plugin_args[2:]])

    def test_unit_user_and_writable_data_dir(self) -> None:
        """The service runs as the litedesk user and may write exactly the data
        directory the example configuration names, with the file limit raised."""
        unit = _unit_settings()
        self.assertEqual(unit["User"], ["litedesk"])
        self.assertEqual(unit["ProtectSystem"], ["strict"])
        self.assertEqual(unit["NoNewPrivileges"], ["true"])
        self.assertEqual(unit["ReadWritePaths"], [_parse(EXAMPLE)["data-dir"]])
        self.assertEqual(unit["LimitNOFILE"], ["1048576"])
        self.assertEqual(unit["Restart"], ["on-failure"])

    def test_install_script_matches_unit(self) -> None:
        """conf/install-server.sh creates, by default, the user, venv, data directory
        and configuration file the unit refers to, and installs this unit file."""
        script = INSTALL.read_text()
        defaults = dict(re.findall(r"^([a-z]+)=\$\{[A-Z_]+:-([^}]*)\}$", script, re.MULTILINE))
        unit = _unit_settings()
        argv = _exec_start()
        self.assertEqual(defaults["user"], unit["User"][0])
        self.assertEqual(defaults["venv"], str(Path(argv[0]).parent.parent))
        self.assertEqual(defaults["data"], unit["WorkingDirectory"][0])
        self.assertEqual(defaults["conf"], argv[argv.index("--config") + 1])
        self.assertEqual(defaults["unit"], f"/etc/systemd/system/{UNIT.name}")
        self.assertEqual(defaults["python"], "/usr/bin/python3")
        self.assertIn('"$src/conf/litedesk-relay.service"', script)
