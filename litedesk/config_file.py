# -*- test-case-name: tests.test_config_file -*-
"""Options read from a configuration file, with the command line winning.

A daemon's settings can come from C{--config FILE}: one C{name = value} per
line, names as the long options (C{_} may stand for C{-}), C{#} starts a
comment, flags take C{yes}/C{no}-style values.  A setting given on the
command line is never overridden by the file, wherever C{--config} appears
in it.  This lives apart from any one daemon's options so that each daemon
that grows a configuration file reads it the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from twisted.python import usage

__all__ = ["ConfigFileError", "ConfigFileOptions", "flag_value", "parse_config"]

TRUE_WORDS = frozenset(("1", "y", "yes", "true", "on"))


class ConfigFileError(usage.UsageError):
    """A configuration file cannot be read or has a line that is no known setting."""


def parse_config(text: str, known: Collection[str], source: str = "<config>") -> dict[str, str]:
    """The settings in a configuration file's text, by long option name.

    @param known: the option names a line may set.
    @param source: the file's name, for error messages (C{FILE:LINE: ...}).
    @raise ConfigFileError: on a line without C{=} or naming an unknown option.
    """
    settings: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, eq, value = line.partition("=")
        name, value = name.strip().replace("_", "-"), value.strip()
        if not eq or name not in known:
            raise ConfigFileError(f"{source}:{n}: unknown setting {raw.strip()!r}")
        settings[name] = value
    return settings


def flag_value(text: str) -> int:
    """A flag's value in a file: 1 for yes/true/on/1/y (any case), else 0."""
    return 1 if text.strip().lower() in TRUE_WORDS else 0


class ConfigFileOptions(usage.Options):
    """C{usage.Options} with C{--config FILE}.

    Subclasses declare C{["config", SHORT, None, HELP]} among their
    C{optParameters} and call C{super().postOptions()} first in their own
    C{postOptions}: it fills from the file what the command line left unset,
    then coerces every parameter still a string (C{usage.Options} coerces only
    what the command line gave, not defaults nor file values).
    """

    # Subclasses' tables; usage.Options gathers them along the class hierarchy.
    optParameters: ClassVar[list[list[Any]]] = []
    optFlags: ClassVar[list[list[Any]]] = []

    def opt_config(self, path: str) -> None:
        self["config"] = path
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigFileError(f"cannot read {path}: {e}") from None
        known = self._option_names() - {"config"}
        self._from_file = parse_config(text, known, path)

    opt_c = opt_config

    def _option_names(self) -> set[str]:
        return {p[0] for p in self.optParameters} | {f[0] for f in self.optFlags}

    def __setitem__(self, key: str, value: Any) -> None:
        # usage.Options stores each command-line option through here while it
        # parses (defaults are put in by update(), which bypasses it): that is
        # how the file learns which settings it must not override.
        if self.__dict__.get("_parsing", False):
            self.__dict__.setdefault("_given", set()).add(key)
        super().__setitem__(key, value)

    def parseOptions(self, options: Any = None) -> None:
        self._parsing = True
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        finally:
            self._parsing = False

    def given_on_command_line(self) -> frozenset[str]:
        """The option names the command line set (so far, while parsing)."""
        return frozenset(self.__dict__.get("_given", ()))

    def postOptions(self) -> None:
        flags = {f[0] for f in self.optFlags}
        given = self.given_on_command_line()
        from_file: dict[str, str] = self.__dict__.get("_from_file", {})
        for name, value in from_file.items():
            if name in given:
                continue
            self[name] = flag_value(value) if name in flags else value
        for p in self.optParameters:
            if len(p) > 4 and p[4] is not None and isinstance(self[p[0]], str):
                self[p[0]] = p[4](self[p[0]])
