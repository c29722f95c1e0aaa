"""C{--config FILE}: a file fills what the command line leaves unset.

The parser on text (examples and a hypothesis property), the merge on a small
Options class of its own, and the relay's real options as an operator uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from litedesk.config_file import ConfigFileError, ConfigFileOptions, flag_value, parse_config
from litedesk.relay_tap import Options as RelayOptions

KNOWN = ("port", "data-dir", "verbose")


def _int(value: str) -> int:
    return int(value)


class _Options(ConfigFileOptions):
    optFlags: ClassVar[list[list[Any]]] = [["verbose", "v", "Talk."]]
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "Read options from this file first."],
        ["port", "p", "100", "A port.", _int],
        ["data-dir", None, ".", "A directory."],
    ]

    def parseArgs(self) -> None:
        pass


class ParseConfigTests(SynchronousTestCase):
    def test_settings_comments_and_blank_lines(self) -> None:
        """'name = value' lines are read; '#' comments, blank lines and spaces are not."""
        text = "# a comment\n\n  port = 2000  # trailing\ndata_dir=/srv/x\n#port = 9\n"
        self.assertEqual(parse_config(text, KNOWN), {"port": "2000", "data-dir": "/srv/x"})

    def test_unknown_setting_names_file_and_line(self) -> None:
        """A misspelt setting stops start-up with FILE:LINE and the line itself."""
        with self.assertRaises(ConfigFileError) as cm:
            parse_config("port = 1\nprot = 2\n", KNOWN, "relay.conf")
        self.assertEqual(str(cm.exception), "relay.conf:2: unknown setting 'prot = 2'")

    def test_line_without_equals_refused(self) -> None:
        """A bare name is not a setting (flags also need '= yes')."""
        with self.assertRaises(ConfigFileError):
            parse_config("verbose\n", KNOWN)

    def test_flag_words(self) -> None:
        """yes/true/on/1/y in any case turn a flag on; anything else off."""
        for word in ("yes", "YES", "True", "on", "1", "y"):
            self.assertEqual(flag_value(word), 1, word)
        for word in ("no", "off", "0", "", "false", "nope"):
            self.assertEqual(flag_value(word), 0, word)

    @given(
        st.dictionaries(
            st.sampled_from(KNOWN),
            st.text(
                st.characters(
                    blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="#"
                ),
                max_size=20,
            ).map(str.strip),
        ),
        st.lists(
            # No line breaks of any kind (str.splitlines knows eight): one note, one line.
            st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30),
            max_size=5,
        ),
    )
    def test_round_trip_with_comment_lines(
        self, settings: dict[str, str], notes: list[str]
    ) -> None:
        """Any settings written one per line, between comment lines, read back exactly;
        and the parser never fails on comments, whatever they hold."""
        lines = [f"# {n}" for n in notes]
        for name, value in settings.items():
            lines.append(f"{name.replace('-', '_')} = {value}")
            lines.extend(lines[: len(notes)])
        self.assertEqual(parse_config("\n".join(lines), KNOWN), settings)

    @given(st.text(max_size=200))
    def test_any_text_parses_or_is_refused_cleanly(self, text: str) -> None:
        """Arbitrary file contents give settings of known names or a ConfigFileError."""
        try:
            found = parse_config(text, KNOWN)
        except ConfigFileError:
            return
        self.assertLessEqual(set(found), set(KNOWN))


class MergeTests(SynchronousTestCase):
    def _file(self, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def _parse(self, *argv: str) -> Any:
        options = _Options()
        options.parseOptions(list(argv))
        return options

    def test_file_fills_and_is_coerced(self) -> None:
        """Values from the file are used and coerced like command-line ones."""
        opts = self._parse("--config", self._file("port = 2000\nverbose = yes\n"))
        self.assertEqual((opts["port"], opts["verbose"], opts["data-dir"]), (2000, 1, "."))

    def test_command_line_wins_before_and_after_config(self) -> None:
        """A setting on the command line beats the file, wherever --config stands."""
        conf = self._file("port = 2000\ndata-dir = /from/file\n")
        for argv in (("--port", "3000", "-c", conf), ("-c", conf, "--port", "3000")):
            opts = self._parse(*argv)
            self.assertEqual((opts["port"], opts["data-dir"]), (3000, "/from/file"), argv)

    def test_command_line_default_value_still_wins(self) -> None:
        """Giving the default explicitly on the command line is still 'given'."""
        opts = self._parse("--port", "100", "--config", self._file("port = 2000\n"))
        self.assertEqual(opts["port"], 100)

    def test_defaults_are_coerced_without_a_file(self) -> None:
        """Without --config the string default comes out as the coerced type."""
        self.assertEqual(self._parse()["port"], 100)

    def test_unreadable_file_is_a_usage_error(self) -> None:
        """A missing file is reported as a usage error naming it (twistd prints it)."""
        missing = str(Path(self.mktemp()) / "nope.conf")
        with self.assertRaises(usage.UsageError) as cm:
            self._parse("--config", missing)
        self.assertIn(f"cannot read {missing}", str(cm.exception))

    def test_config_cannot_name_config(self) -> None:
        """A file cannot chain to another file."""
        with self.assertRaises(ConfigFileError):
            self._parse("--config", self._file("config = /etc/other.conf\n"))


class RelayConfigTests(SynchronousTestCase):
    def test_relay_file_and_command_line(self) -> None:
        """litedesk-relay: the file sets the port and a flag, the command line the key;
        the endpoints derived from the port follow the file's port."""
        conf = Path(self.mktemp())
        conf.write_text("port = 31116\nalways_use_relay = yes\nkey = from-file\n")
        opts = RelayOptions()
        opts.parseOptions(["--key", "from-cli", "--config", str(conf)])
        self.assertEqual(opts["port"], 31116)
        self.assertEqual(opts["always-use-relay"], 1)
        self.assertEqual(opts["key"], "from-cli")
        self.assertEqual(opts["nat-endpoint"], "tcp6:31115:interface=\\:\\:")
        self.assertEqual(opts["relay-endpoint"], "tcp6:31117:interface=\\:\\::backlog=4096")

    def test_relay_bad_file_value_refused(self) -> None:
        """A value from the file goes through the option's check (no negative rate)."""
        conf = Path(self.mktemp())
        conf.write_text("udp-rate-per-ip = -5\n")
        with self.assertRaises(usage.UsageError):
            RelayOptions().parseOptions(["--config", str(conf)])
