"""A real headless browser for the web console's tests: Debian's chromium
driven by selenium through Debian's chromedriver.

Why a real browser: cookie flags (HttpOnly, SameSite, Secure), form posts
with CSRF tokens and redirects are what the browser does with them, not what
the server thinks it sent (issue 16, item 4).

Three constraints shape this module:

  - B{No network in CI.}  selenium-manager, which downloads drivers and
    browsers, must never run: L{Browser.start} always names
    C{/usr/bin/chromedriver} in the C{Service}, and selenium skips its
    manager when the driver path is given.  The browser binary is Debian's
    C{/usr/lib/chromium/chromium}, not the C{/usr/bin/chromium} shell
    launcher, whose C{/etc/chromium.d} scripts add flags we do not want
    (extensions, GPU rasterization) and, with several /dev/shm mounts, fail
    a shell test.
  - B{Selenium blocks.}  The server under test runs on the trial reactor in
    the same process, so every selenium call runs in a reactor pool thread
    (L{browse} returns a Deferred) while the reactor keeps serving.  One
    script runs at a time per browser (a C{DeferredLock}): a WebDriver
    session is not thread-safe.
  - B{Nothing left behind.}  Each browser gets a private temporary root: the
    profile (C{--user-data-dir}) and the HOME / XDG directories, so that
    chromium's crashpad handlers (which detach from the process tree) carry
    that root in their command line too.  L{Browser.quit} asks chromedriver
    to quit and then kills, by pid, every process still alive that is
    chromedriver itself or names that root.

One browser per test, not per class: a fresh profile means a fresh cookie
jar, so a sign-in test cannot pass on a previous test's session cookie, and
trial has no per-class fixture that is torn down reliably.  Starting costs
about 1 s on an idle machine and a few seconds on 2 cores under C{trial -j2};
the timeouts below are generous for that (L{START_TIMEOUT}; give a browser
test class C{timeout = BROWSER_TEST_TIMEOUT}).

When a script raises, L{browse} keeps a screenshot and the page source in
the directory named by C{LITEDESK_TEST_ARTIFACTS} (tests/run.sh sets it and
prints it when not empty), else C{browser-artifacts/} in trial's temporary
directory (trial's working directory), named after the test id, and fails
with L{BrowserScriptFailed}, whose message names both files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

__all__ = [
    "ARTIFACTS_ENV",
    "BROWSER_TEST_TIMEOUT",
    "CHROMEDRIVER",
    "CHROMIUM",
    "START_TIMEOUT",
    "WAIT_TIMEOUT",
    "Browser",
    "BrowserScriptFailed",
    "Cookie",
    "artifact_stem",
    "artifacts_dir",
    "browse",
    "browser_for",
    "browser_processes",
    "click",
    "cookies",
    "fill",
    "missing_browser",
    "page_status",
    "wait_for",
]

_T = TypeVar("_T")
_log = Logger()

#: Debian's chromedriver (package chromium-driver); never selenium-manager's.
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Debian's chromium binary itself (package chromium), not the shell launcher.
CHROMIUM = "/usr/lib/chromium/chromium"
#: Seconds chromedriver waits for chromium to start (its browserStartupTimeout,
#: 60 s by default) and for a page to load: chromium's start takes about 1 s
#: here, but several seconds on 2 busy cores under trial -j2 next to other
#: suites.  selenium's own limits are above it: about 30 s for chromedriver
#: to listen, 120 s for any chromedriver command.
START_TIMEOUT = 90.0
#: Default seconds L{wait_for} waits for an element.
WAIT_TIMEOUT = 30.0
#: A trial C{timeout} for test classes that start a browser (trial's default
#: is 120 s; a slow start plus a few page loads must fit).
BROWSER_TEST_TIMEOUT = 300.0
#: The window size every test sees (screenshots and layouts comparable).
WINDOW_SIZE = (1280, 900)
#: Where the artifacts go when set (tests/run.sh sets it).
ARTIFACTS_ENV = "LITEDESK_TEST_ARTIFACTS"


def missing_browser() -> str | None:
    """Why this machine cannot run browser tests, or C{None}."""
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        return (
            f"{', '.join(absent)} not installed (Debian: apt-get install chromium "
            "chromium-driver; see tests/apt-packages.txt)"
        )
    return None


class BrowserScriptFailed(Exception):
    """A browser script raised; a screenshot and the page source were kept.

    @ivar screenshot: the PNG file, or C{None} if the browser could not take one.
    @ivar page_source: the HTML file, or C{None} likewise.
    """

    def __init__(self, message: str, screenshot: Path | None, page_source: Path | None) -> None:
        super().__init__(message)
        self.screenshot = screenshot
        self.page_source = page_source


@dataclass(frozen=True)
class Cookie:
    """A cookie as the browser holds it (not as the server sent it)."""

    name: str
    value: str
    http_only: bool
    secure: bool
    #: C{"Strict"}, C{"Lax"}, C{"None"}, or C{None} when the browser reports none.
    same_site: str | None
    path: str


def artifacts_dir() -> Path:
    """The directory failure artifacts go to (created by whoever writes)."""
    configured = os.environ.get(ARTIFACTS_ENV)
    if configured:
        return Path(configured)
    # trial runs tests with its temporary directory (_trial_temp, or
    # _trial_temp/N under -j) as the working directory.
    return Path.cwd() / "browser-artifacts"


def artifact_stem(test_id: str) -> str:
    """A file name stem from a test id: safe characters only, never empty,
    never hidden, bounded (test ids can carry hypothesis or parameter text)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("._") or "test"
    return stem[:150]


def browser_processes(root: Path, driver_pid: int | None) -> list[int]:
    """Pids of live (non-zombie) processes that are C{driver_pid} or name
    C{root} in their command line: a browser's chromedriver and chromium."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (pid == driver_pid or needle in cmdline):
            found.append(pid)
    return found


class Browser:
    """One headless chromium and its chromedriver, with a private root.

    Blocking: call from a thread (L{browse} does).
    """

    def __init__(self, driver: WebDriver, service: Service, root: Path) -> None:
        #: The selenium session (use it from one thread at a time).
        self.driver = driver
        #: The private directory holding the profile, HOME and chromedriver's log.
        self.root = root
        self._service = service
        self._quit = False

    @property
    def driver_pid(self) -> int | None:
        """chromedriver's pid."""
        return _driver_pid(self._service)

    @classmethod
    def start(cls) -> Browser:
        """Start chromedriver and a headless chromium (blocking)."""
        root = Path(tempfile.mkdtemp(prefix="litedesk-browser-"))
        profile = root / "profile"
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        options.add_experimental_option("browserStartupTimeout", int(START_TIMEOUT * 1000))
        for arg in (
            "--headless=new",
            # CI runs as root, where chromium refuses its sandbox.
            "--no-sandbox",
            # Containers give /dev/shm 64 MB; chromium then crashes tabs.
            "--disable-dev-shm-usage",
            f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-crash-reporter",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
        ):
            options.add_argument(arg)
        # The profile's HOME and XDG dirs: nothing written to the real home,
        # and crashpad's --database names our root (see the module docstring).
        env = dict(os.environ)
        for name, sub in (
            ("HOME", "home"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_CACHE_HOME", "cache"),
        ):
            (root / sub).mkdir()
            env[name] = str(root / sub)
        service = Service(
            executable_path=CHROMEDRIVER, log_output=str(root / "chromedriver.log"), env=env
        )
        try:
            driver = webdriver.Chrome(options=options, service=service)
        except Exception as e:
            log = _tail(root / "chromedriver.log") or "(empty)"
            cls._kill_leftovers(root, service)
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(
                f"chromium did not start: {e}\nchromedriver's log ends:\n{log}"
            ) from e
        driver.set_page_load_timeout(START_TIMEOUT)
        driver.set_script_timeout(WAIT_TIMEOUT)
        return cls(driver, service, root)

    def quit(self) -> None:
        """Quit the browser and kill what it left behind (blocking, idempotent)."""
        if self._quit:
            return
        self._quit = True
        with contextlib.suppress(Exception):
            self.driver.quit()
        self._kill_leftovers(self.root, self._service)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill_leftovers(root: Path, service: Service) -> None:
        process = getattr(service, "process", None)
        for pid in browser_processes(root, _driver_pid(service)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(Exception):
                process.wait(timeout=10)

    def run(self, script: Callable[[WebDriver], _T], test_id: str) -> _T:
        """Run C{script(driver)}; if it raises, keep the artifacts and raise
        L{BrowserScriptFailed} naming them (blocking)."""
        try:
            return script(self.driver)
        except Exception as e:
            raise self._failed(e, test_id) from e

    def _failed(self, error: Exception, test_id: str) -> BrowserScriptFailed:
        directory = artifacts_dir()
        url = "?"
        with contextlib.suppress(Exception):
            url = self.driver.current_url
        try:
            directory.mkdir(parents=True, exist_ok=True)
            stem = directory / _unused(directory, artifact_stem(test_id))
        except OSError as e:
            screenshot = page_source = None
            why = f"(none: cannot write to {directory}: {e})"
        else:
            screenshot = self._keep(Path(f"{stem}.png"), self.driver.get_screenshot_as_png)
            page_source = self._keep(
                Path(f"{stem}.html"), lambda: self.driver.page_source.encode("utf-8")
            )
            why = "(none: the browser did not answer)"
        trace = "".join(traceback.format_exception(error)).rstrip()
        return BrowserScriptFailed(
            f"browser script failed at {url}\n"
            f"  screenshot: {screenshot or why}\n"
            f"  page source: {page_source or why}\n"
            f"{trace}",
            screenshot,
            page_source,
        )

    @staticmethod
    def _keep(path: Path, read: Callable[[], bytes]) -> Path | None:
        """C{path}, holding what C{read} returned; C{None} if either failed."""
        try:
            path.write_bytes(read())
        except Exception:
            return None
        return path


def _driver_pid(service: Service) -> int | None:
    process = getattr(service, "process", None)
    return process.pid if process is not None else None


def _unused(directory: Path, stem: str) -> str:
    """C{stem}, or C{stem-2}, C{stem-3}... if a test fails more than once."""
    candidate, n = stem, 1
    while (directory / f"{candidate}.png").exists() or (directory / f"{candidate}.html").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class _Slot:
    """A test's browser (once started) and the lock its scripts take turns on."""

    browser: Browser | None = None
    lock: DeferredLock = field(default_factory=DeferredLock)


_ATTR = "_litedesk_browser"


def browser_for(case: TestCase) -> Deferred[Browser]:
    """This test's browser, started in a thread on first use; quit (in a
    thread, so a hung browser cannot block the reactor) by a cleanup."""

    async def get() -> Browser:
        slot: _Slot = case.__dict__.setdefault(_ATTR, _Slot())
        await slot.lock.acquire()
        try:
            if slot.browser is None:
                began = time.monotonic()
                slot.browser = await deferToThread(Browser.start)
                _log.info(
                    "chromium started for {test} in {seconds:.2f} s",
                    test=case.id(),
                    seconds=time.monotonic() - began,
                )
                case.addCleanup(deferToThread, slot.browser.quit)
            return slot.browser
        finally:
            slot.lock.release()

    return ensureDeferred(get())


def browse(case: TestCase, script: Callable[[WebDriver], _T]) -> Deferred[_T]:
    """Run C{script(driver)} in a thread in this test's browser, while the
    reactor serves; fail with L{BrowserScriptFailed} (artifacts kept) if it
    raises.  Scripts of one test run one at a time."""

    async def run() -> _T:
        browser = await browser_for(case)
        slot: _Slot = case.__dict__[_ATTR]
        await slot.lock.acquire()
        try:
            return await deferToThread(browser.run, script, case.id())
        finally:
            slot.lock.release()

    return ensureDeferred(run())


# Helpers for scripts (blocking; they run in the browser's thread).


def cookies(driver: WebDriver) -> dict[str, Cookie]:
    """The cookies the browser holds for the current page, by name."""
    held: dict[str, Cookie] = {}
    for c in driver.get_cookies():
        held[c["name"]] = Cookie(
            name=c["name"],
            value=c["value"],
            http_only=bool(c.get("httpOnly", False)),
            secure=bool(c.get("secure", False)),
            same_site=c.get("sameSite"),
            path=c.get("path", "/"),
        )
    return held


def wait_for(driver: WebDriver, css: str, timeout: float = WAIT_TIMEOUT) -> WebElement:
    """The element matching C{css} once it is visible; raises selenium's
    C{TimeoutException} (naming C{css}) after C{timeout} seconds."""
    element: WebElement = WebDriverWait(driver, timeout).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)),
        f"no visible element {css!r} after {timeout} s",
    )
    return element


def fill(driver: WebDriver, fields: Mapping[str, str], form: str = "form") -> None:
    """Type C{fields} (input name -> text) into the inputs of C{form} (CSS)."""
    container = wait_for(driver, form)
    for name, text in fields.items():
        field = container.find_element(By.CSS_SELECTOR, f'[name="{name}"]')
        field.clear()
        field.send_keys(text)


def click(driver: WebDriver, css: str) -> None:
    """Click the element matching C{css} once it is visible."""
    wait_for(driver, css).click()


def page_status(driver: WebDriver) -> int:
    """The HTTP status of the page now shown (after redirects), as the
    browser's Navigation Timing entry reports it; 0 when it has none."""
    status: Any = driver.execute_script(
        "const e = performance.getEntriesByType('navigation')[0];return e ? e.responseStatus : 0;"
    )
    return int(status or 0)
