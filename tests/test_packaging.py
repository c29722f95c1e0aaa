"""The project installs the way a user installs it, and twistd then finds the plugin.

Each test copies the files git tracks (so no .venv, build/ or dropin.cache of the
developer's checkout can leak in) into a temporary directory and builds from there
with pip, offline: ``--no-deps --no-build-isolation --no-index``.

The throwaway venvs are made with ``python -m venv --without-pip`` from the running
interpreter.  Its base interpreter may lack Twisted (on CI only the project's .venv
has it), and ``--system-site-packages`` would only add the base interpreter's
packages, so instead a ``.pth`` file appends the running interpreter's
site-packages directories.  Plain directory lines in a ``.pth`` file are not
scanned for further ``.pth`` files, so the outer venv's editable install of
litedesk (its ``__editable__`` .pth) stays invisible; every test also checks
where ``litedesk`` and the plugin module were imported from.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support.skips import cannot_run

REPO = Path(__file__).resolve().parent.parent

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

WHERE = """
import json, litedesk, litedesk.relay_tap
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "litedesk-relay"]
import twisted.plugins.litedesk_relay as plugin
print(json.dumps({"litedesk": litedesk.__file__, "tap": litedesk.relay_tap.__file__,
                  "plugin": plugin.__file__, "makers": len(makers)}))
"""

PLUGIN_OPTIONS = (
    "--data-dir",
    "--port",
    "--key",
    "--relay-servers",
    "--serial",
    "--always-use-relay",
    "--discovery",
    "--config",
)

PIP_OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; return its stdout, or fail with everything it printed."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)!r} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def _clean_env(extra_path: Path | None = None) -> dict[str, str]:
    """os.environ without anything that would point Python or pip elsewhere."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))
    }
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _outer_site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _is_under(path: str, parent: Path) -> bool:
    return Path(path).resolve().is_relative_to(parent.resolve())


class PackagingTests(SynchronousTestCase):
    def setUp(self) -> None:
        if shutil.which("git") is None or not (REPO / ".git").exists():
            cannot_run("needs a git checkout and git (the build copies tracked files)")
        self.tmp = Path(self.mktemp()).resolve()
        self.tmp.mkdir(parents=True)
        self.elsewhere = self.tmp / "elsewhere"
        self.elsewhere.mkdir()

    def copy_checkout(self) -> Path:
        """Copy the files git tracks (as they are in the work tree) to a new directory."""
        dest = self.tmp / "src"
        names = _run(["git", "ls-files", "-z"], REPO).split("\0")
        for name in filter(None, names):
            source = REPO / name
            if not source.is_file():  # deleted in the work tree, or a submodule
                continue
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
        return dest

    def make_venv(self) -> tuple[Path, Path]:
        """A venv that sees the running interpreter's packages; returns (python, its purelib)."""
        venv = self.tmp / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], self.tmp, _clean_env())
        python = venv / "bin" / "python"
        purelib = Path(
            _run(
                [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                self.elsewhere,
                _clean_env(),
            ).strip()
        )
        (purelib / "_litedesk_test_outer.pth").write_text("\n".join(_outer_site_dirs()) + "\n")
        return python, purelib

    def install_and_check(self, editable: bool) -> None:
        src = self.copy_checkout()
        python, purelib = self.make_venv()
        env = _clean_env(python.parent)
        target = ["-e", "."] if editable else ["."]
        _run(
            [
                str(python),
                "-I",
                "-m",
                "pip",
                "install",
                *PIP_OFFLINE,
                "--ignore-installed",
                *target,
            ],
            src,
            env,
        )
        # The copy under test is what gets imported, not the developer's checkout.
        where = json.loads(_run([str(python), "-I", "-c", WHERE], self.elsewhere, env))
        home = src if editable else purelib
        for key in ("litedesk", "tap", "plugin"):
            self.assertTrue(_is_under(where[key], home), f"{key} imported from {where[key]}")
        self.assertEqual(where["makers"], 1)

        commands = _run([str(python), "-I", "-c", TWISTD, "--help"], self.elsewhere, env)
        self.assertIn("litedesk-relay", commands)
        self.assertIn("RustDesk-compatible", commands)

        usage = _run(
            [str(python), "-I", "-c", TWISTD, "litedesk-relay", "--help"], self.elsewhere, env
        )
        for option in PLUGIN_OPTIONS:
            self.assertIn(option, usage)

    def test_pip_install(self) -> None:
        """After C{pip install .}, C{twistd --help} run from any directory lists
        litedesk-relay, and C{twistd litedesk-relay --help} shows its options."""
        self.install_and_check(editable=False)

    def test_pip_install_editable(self) -> None:
        """After C{pip install -e .}, C{twistd --help} run from another directory lists
        litedesk-relay from the checkout, and C{twistd litedesk-relay --help} shows its
        options."""
        self.install_and_check(editable=True)

    def test_wheel_contents(self) -> None:
        """The wheel ships the twistd plugin, the generated protobuf modules and every
        tracked module under litedesk/, but neither twisted/__init__.py nor
        twisted/plugins/__init__.py (which would shadow Twisted) nor a dropin.cache,
        even when the source tree has one."""
        src = self.copy_checkout()
        (src / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale cache")
        out = self.tmp / "dist"
        _run(
            [sys.executable, "-I", "-m", "pip", "wheel", *PIP_OFFLINE, "-w", str(out), "."],
            src,
            _clean_env(),
        )
        (wheel,) = out.glob("litedesk-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
        self.assertIn("twisted/plugins/litedesk_relay.py", names)
        self.assertIn("litedesk/proto/rendezvous_pb2.py", names)
        self.assertIn("litedesk/proto/rendezvous_pb2.pyi", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual([n for n in names if n.endswith("dropin.cache")], [])
        tracked = {p.relative_to(src).as_posix() for p in (src / "litedesk").rglob("*.py")}
        self.assertEqual(sorted(tracked - names), [], "tracked modules missing from the wheel")
